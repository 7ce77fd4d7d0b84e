"""Request and response bodies (pydantic): the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flywheel.db.models import FeedbackKind

# PostgreSQL text cannot hold NUL bytes: refuse them at the edge with a 422.
NO_NUL = r"^[^\x00]*$"
UserId = Field(
    min_length=1,
    max_length=200,
    pattern=NO_NUL,
    description="The end user who gave the feedback",
)
LabelField = Field(default=None, min_length=1, max_length=200, pattern=NO_NUL)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopK(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    prediction_id: str
    sample_id: str
    label: str
    confidence: float
    top_k: list[TopK]
    model_version: str
    created_at: datetime


class FeedbackIn(Strict):
    prediction_id: str = Field(min_length=1, max_length=36, pattern=NO_NUL)
    kind: FeedbackKind
    label: str | None = LabelField
    user_id: str = UserId


class FeedbackOut(BaseModel):
    feedback_id: str
    prediction_id: str
    kind: str
    label: str | None
    user_id: str
    created_at: datetime
    replayed: bool = Field(description="True when an earlier request with this key made it")


class FeedbackBatchItem(FeedbackIn):
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=NO_NUL,
        description="Per item; defaults to '<Idempotency-Key header>/<index>' when the "
        "header is sent",
    )


class FeedbackBatchIn(Strict):
    items: list[FeedbackBatchItem] = Field(min_length=1)


class ErrorInfo(BaseModel):
    code: str
    message: str


class FeedbackBatchResult(BaseModel):
    index: int
    status: int = Field(description="The HTTP status this item would have had on its own")
    feedback: FeedbackOut | None = None
    error: ErrorInfo | None = None


class FeedbackBatchOut(BaseModel):
    written: int
    replayed: int
    failed: int
    results: list[FeedbackBatchResult]


class Health(BaseModel):
    status: Literal["ok"]


class Check(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class Payload(BaseModel):
    """A free-form JSON object (metrics, evidence)."""

    model_config = ConfigDict(extra="allow")


JsonDict = dict[str, Any]
