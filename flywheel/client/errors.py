"""What the client raises: one exception class per kind of failure, parsed from the API's
``{"error": {"code", "message", "details"}}`` body."""

from __future__ import annotations

from typing import Any

import httpx


class FlywheelClientError(Exception):
    """Base class of everything this client raises."""


class FlywheelConnectionError(FlywheelClientError):
    """The server could not be reached (or did not answer) after all retries."""


class FlywheelAPIError(FlywheelClientError):
    """The server answered with an error status: ``status``, ``code``, ``message``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class BadRequest(FlywheelAPIError):
    """400: a request the server understood but cannot carry out."""


class AuthError(FlywheelAPIError):
    """401: missing, unknown or revoked API key."""


class PermissionDenied(FlywheelAPIError):
    """403: the key's role or tenant may not do this."""


class NotFound(FlywheelAPIError):
    """404: an unknown id."""


class Conflict(FlywheelAPIError):
    """409: clashes with work in progress, or no champion model yet (``code="no_model"``)."""


class PayloadTooLarge(FlywheelAPIError):
    """413: the body is over the server's limit."""


class UnsupportedMedia(FlywheelAPIError):
    """415: the bytes are not an image of an allowed format."""


class InvalidRequest(FlywheelAPIError):
    """422: malformed or invalid input (also an Idempotency-Key reused with another body)."""


class ServerError(FlywheelAPIError):
    """5xx: the server failed (after retries, for 502/503/504)."""


_ERRORS: dict[int, type[FlywheelAPIError]] = {
    400: BadRequest,
    401: AuthError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    422: InvalidRequest,
}


def error_for(response: httpx.Response) -> FlywheelAPIError:
    status = response.status_code
    code, message, details = f"http_{status}", response.reason_phrase, None
    try:
        body = response.json()
    except ValueError:  # e.g. a proxy's HTML error page
        body = None
        message = response.text[:300] or message
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code", code))
        message = str(err.get("message", message))
        details = err.get("details")
    cls = _ERRORS.get(status, ServerError if status >= 500 else FlywheelAPIError)
    return cls(status, code, message, details)


def is_in_flight(response: httpx.Response) -> bool:
    """A 409 meaning "a request with this key is in flight" (not, say, an integrity clash)."""
    if response.status_code != 409:
        return False
    try:
        return response.json()["error"]["code"] == "conflict"
    except (ValueError, KeyError, TypeError):
        return False
