"""The records of DESIGN.md as SQLAlchemy 2 models.

Any change here needs an Alembic revision in ``flywheel/db/migrations/versions``; a test
compares the migrated schema with these models so the two cannot drift apart.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware_utc(now: datetime | None) -> datetime:
    """``now`` (default: the current time) as an aware UTC datetime; naive ones are refused,
    since SQLite stores no offset and every stored time must be UTC."""
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


class Split(enum.StrEnum):
    TRAIN = "train"  # labeled, trained on
    POOL = "pool"  # unlabeled (its hidden truth, if any, is in ground_truth)
    VAL = "val"  # labeled, held out for calibration / model selection
    TEST = "test"  # labeled, frozen evaluation set: never trained on


class LabelSource(enum.StrEnum):
    SEED = "seed"
    HUMAN = "human"
    FEEDBACK = "feedback"
    PSEUDO = "pseudo"


class CycleTrigger(enum.StrEnum):
    """What started a cycle (``Cycle.trigger``)."""

    MANUAL = "manual"  # an engineer: the CLI or POST /v1/cycles
    SCHEDULE = "schedule"  # beat's cron or interval
    FEEDBACK = "feedback"  # enough new feedback since the last cycle
    DRIFT = "drift"  # production inputs drifted from the training set


class FeedbackKind(enum.StrEnum):
    CONFIRM = "confirm"
    CORRECT = "correct"
    REJECT = "reject"


class CycleState(enum.StrEnum):
    QUEUED = "queued"
    EMBEDDING = "embedding"
    SELECTING = "selecting"
    VERSIONING = "versioning"
    TRAINING = "training"
    EVALUATING = "evaluating"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"


# Stable constraint names so Alembic migrations behave the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Sample(Base):
    """A content-addressed input: its id is the sha256 of its bytes."""

    __tablename__ = "samples"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    blob_uri: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(200))
    split: Mapped[str] = mapped_column(String(16), index=True)
    original_name: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class GroundTruth(Base):
    """True labels of pool samples, kept aside: never trained on, only for measuring."""

    __tablename__ = "ground_truth"

    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    label: Mapped[str] = mapped_column(String(200))


class Label(Base):
    """A label is never edited: a newer row for the same sample supersedes it."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_sample_id_id", "sample_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"))
    label: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    method: Mapped[str] = mapped_column(String(100))
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycles.id"))
    annotator: Mapped[str | None] = mapped_column(String(200))
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"))
    # Why this label: for pseudo-labels the scores and nearest labeled neighbours.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A retraction row says "this sample has no label any more" (e.g. a pseudo-label the
    # newest model no longer trusts) without deleting history.
    retracted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), index=True)
    model_version: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    top_k: Mapped[list[Any]] = mapped_column(JSON, default=list)
    app_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    app_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(200))
    # "<tenant>:<client key>": Idempotency-Key values are scoped to the tenant that sent them.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    # sha256 of the request body, so a replayed key with a different body is refused.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Cycle(Base):
    __tablename__ = "cycles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16), default=CycleState.QUEUED.value)
    step: Mapped[str | None] = mapped_column(String(50))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dataset_version_in: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    dataset_version_out: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # What the current step is doing ("SSL epoch 3/30"): the progress line of CLI and API.
    message: Mapped[str | None] = mapped_column(Text)
    trigger: Mapped[str | None] = mapped_column(String(32))  # manual | schedule | feedback
    worker: Mapped[str | None] = mapped_column(String(200))  # who runs the current step
    # Each step's record of its finished output: a redelivered step finds it and returns.
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)


class Role(enum.StrEnum):
    APP = "app"  # product apps: predict, feedback, upload samples
    ENGINEER = "engineer"  # also cycles, review, models, datasets


class ApiKey(Base):
    """An API key; only the sha256 of its secret is stored, never the secret itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public part of the token
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime())


class ReviewState(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"  # a human confirmed or corrected the label
    REJECTED = "rejected"  # a human said no label applies
    SUPERSEDED = "superseded"  # a later cycle re-queued the sample


class ReviewReason(enum.StrEnum):
    """Why a sample is in the review queue."""

    UNCERTAIN = "uncertain"  # a cycle's pseudo-label near its class threshold, or disputed
    FEEDBACK_CONFLICT = "feedback_conflict"  # users' votes give no confident consensus
    LABEL_AUDIT = "label_audit"  # the label audit: a human-made label looks wrong


class ReviewItem(Base):
    """A sample a human should look at: uncertain pseudo-labels, feedback conflicts."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("cycle_id", "sample_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), index=True)
    cycle_id: Mapped[int | None] = mapped_column(ForeignKey("cycles.id"))
    reason: Mapped[str] = mapped_column(String(32))
    proposed_label: Mapped[str | None] = mapped_column(String(200))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=ReviewState.OPEN.value, index=True)
    decided_label: Mapped[str | None] = mapped_column(String(200))
    reviewer: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(TZDateTime())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class DatasetVersion(Base):
    """An immutable snapshot; the rows live in a Parquet manifest checked by ``checksum``."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    manifest_uri: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    num_rows: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)


class OutboxMessage(Base):
    """A message written in the same transaction as the rows it is about (transactional outbox).

    A relay (``flywheel.cycle.outbox.relay``) publishes unsent rows to the broker and stamps
    ``sent_at``; delivery is at-least-once, so consumers must be idempotent.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # One logical message is enqueued once, however often its producer retries.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    # Not published before this time: exponential backoff after a failed publish.
    available_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(TZDateTime(), index=True)


class CycleLease(Base):
    """A named lock that expires unless its holder renews it (one cycle at a time per project)."""

    __tablename__ = "cycle_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    cycle_id: Mapped[int | None] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime())


class SampleAccess(Base):
    """Which tenants may see a sample: those that uploaded, registered or predicted on it.

    Samples are content-addressed, so two tenants sending the same bytes share one sample
    row; each gets its own access row. Engineers see every sample.
    """

    __tablename__ = "sample_access"

    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class Quarantine(Base):
    """A sample a cycle could not use (undecodable bytes, vanished blob), and why.

    Cycles skip quarantined samples; releasing one (deleting its row) lets the next cycle
    try it again.
    """

    __tablename__ = "quarantine"

    sample_id: Mapped[str] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    cycle_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
