"""A small synchronous client for Flywheel's HTTP API (httpx), with safe retries.

    from flywheel.client import FlywheelClient

    with FlywheelClient("http://127.0.0.1:8000", api_key="fw_...") as fw:
        pred = fw.predict("cat.png", top_k=3)
        fw.feedback(pred.prediction_id, "correct", user_id="u42", label="dog")

Retries use exponential backoff with jitter, and only for transient failures: connection
errors, timeouts, 502/503/504 and, on feedback, 409 "a request with this key is in flight".
Other 4xx answers are never retried. Feedback always carries an ``Idempotency-Key`` (a uuid4
unless given) that every retry of the same call reuses, so a retry after a lost answer is
a replay, never a second write. ``predict`` records a prediction per call, so it is only
retried when the request provably did not reach the server (or on 503).

Errors raise ``FlywheelAPIError`` (``.status``, ``.code``, ``.message``, ``.details``) or a
subclass per status (``AuthError``, ``PermissionDenied``, ``NotFound``, ...), parsed from the
API's ``{"error": {"code", "message", "details"}}`` body; a server that cannot be reached
after the retries raises ``FlywheelConnectionError``.
"""

from flywheel.client.errors import (
    AuthError,
    BadRequest,
    Conflict,
    FlywheelAPIError,
    FlywheelClientError,
    FlywheelConnectionError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerError,
    UnsupportedMedia,
)
from flywheel.client.http import FlywheelClient, ImageInput
from flywheel.client.records import (
    BatchItemResult,
    BatchResult,
    Check,
    ErrorInfo,
    Feedback,
    FeedbackItem,
    Prediction,
    Readiness,
    Rejected,
    TopK,
    UploadResult,
)

__all__ = [
    "AuthError",
    "BadRequest",
    "BatchItemResult",
    "BatchResult",
    "Check",
    "Conflict",
    "ErrorInfo",
    "Feedback",
    "FeedbackItem",
    "FlywheelAPIError",
    "FlywheelClient",
    "FlywheelClientError",
    "FlywheelConnectionError",
    "ImageInput",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Prediction",
    "Readiness",
    "Rejected",
    "ServerError",
    "TopK",
    "UnsupportedMedia",
    "UploadResult",
]
