"""Request and response bodies (pydantic): the OpenAPI document is built from these.

A response model declares each field once and is filled from the library's record with
``model_validate(record, from_attributes=True)``; a field named otherwise in the record
says so with ``validation_alias``, and a value the record does not hold (whether a feedback
was a replay) is added with ``Extended``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from flywheel.db.models import FeedbackKind
from flywheel.text import SAFE_TEXT_PATTERN

# Every id, label, name or key a client sends (bodies, queries, forms, headers) follows this
# one rule: no control characters nor the invisible ones that reorder text (flywheel/text.py),
# which terminals and pages would act on; PostgreSQL's text cannot hold NUL either. A 422.
SAFE_TEXT = SAFE_TEXT_PATTERN
UserId = Field(
    min_length=1,
    max_length=200,
    pattern=SAFE_TEXT,
    description="The end user who gave the feedback",
)
LabelField = Field(default=None, min_length=1, max_length=200, pattern=SAFE_TEXT)
MAX_ID = 2**31 - 1  # ids are 32-bit integer columns on PostgreSQL; offsets share the bound
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


class Extended:
    """A record as ``from_attributes`` reads it, with values it does not hold added."""

    def __init__(self, record: object, **extra: object) -> None:
        self._record = record
        self._extra = extra

    def __getattr__(self, name: str) -> Any:  # only names the wrapper itself lacks
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._extra:
            return self._extra[name]
        return getattr(self._record, name)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopK(BaseModel):
    label: str
    probability: float


class PredictionOut(BaseModel):
    prediction_id: str = Field(validation_alias="id")
    sample_id: str
    label: str
    confidence: float
    top_k: list[TopK]
    model_version: str
    created_at: datetime


class FeedbackIn(Strict):
    prediction_id: str = Field(min_length=1, max_length=36, pattern=SAFE_TEXT)
    kind: FeedbackKind
    label: str | None = LabelField
    user_id: str = UserId


class FeedbackOut(BaseModel):
    feedback_id: str = Field(validation_alias="id")
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
        pattern=SAFE_TEXT,
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
