"""What the client returns: plain dataclasses built from the API's JSON answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class TopK:
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    prediction_id: str
    sample_id: str
    label: str
    confidence: float
    top_k: tuple[TopK, ...]
    model_version: str
    created_at: datetime

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Prediction:
        return cls(
            prediction_id=d["prediction_id"],
            sample_id=d["sample_id"],
            label=d["label"],
            confidence=float(d["confidence"]),
            top_k=tuple(TopK(t["label"], float(t["probability"])) for t in d["top_k"]),
            model_version=d["model_version"],
            created_at=datetime.fromisoformat(d["created_at"]),
        )


@dataclass(frozen=True)
class Feedback:
    feedback_id: str
    prediction_id: str
    kind: str
    label: str | None
    user_id: str
    created_at: datetime
    replayed: bool  # True: an earlier request with this key wrote it (nothing new written)
    idempotency_key: str | None = None  # the key sent: keep it to retry later yourself

    @classmethod
    def from_json(cls, d: Mapping[str, Any], idempotency_key: str | None = None) -> Feedback:
        return cls(
            feedback_id=d["feedback_id"],
            prediction_id=d["prediction_id"],
            kind=d["kind"],
            label=d.get("label"),
            user_id=d["user_id"],
            created_at=datetime.fromisoformat(d["created_at"]),
            replayed=bool(d.get("replayed", False)),
            idempotency_key=idempotency_key,
        )


@dataclass(frozen=True)
class FeedbackItem:
    """One item for ``feedback_batch`` (plain dicts with these keys work too)."""

    prediction_id: str
    kind: str
    user_id: str
    label: str | None = None
    idempotency_key: str | None = None  # None: the client makes one


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str


@dataclass(frozen=True)
class BatchItemResult:
    index: int
    status: int  # the HTTP status this item would have had on its own
    idempotency_key: str
    feedback: Feedback | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BatchResult:
    written: int
    replayed: int
    failed: int
    results: tuple[BatchItemResult, ...]


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str


@dataclass(frozen=True)
class UploadResult:
    added: int  # new samples stored
    duplicates: tuple[str, ...]  # names of inputs already stored (not re-added)
    rejected: tuple[Rejected, ...]  # inputs refused, with the reason (none stored)
    sample_ids: tuple[str, ...]  # ids of the new samples, in input order

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> UploadResult:
        return cls(
            added=int(d["added"]),
            duplicates=tuple(d.get("duplicates", ())),
            rejected=tuple(Rejected(x["name"], x["reason"]) for x in d.get("rejected", ())),
            sample_ids=tuple(d.get("sample_ids", ())),
        )


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: Mapping[str, Check] = field(default_factory=lambda: MappingProxyType({}))
