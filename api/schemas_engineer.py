"""Request and response bodies of the sample, cycle, dataset, model, review and annotator
routes (filled from the library's records as ``api.schemas`` says)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from api.schemas import SAFE_TEXT
from flywheel.config import LearningSettings
from flywheel.db.models import Split
from flywheel.text import UNSAFE_CHARS


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as null: JSON has neither, yet a diverged loss can
    be stored as one, and a stored record must not make a read fail."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# A stored JSON object as an answer holds it: a copy, NaN and infinities as null.
JsonObject = Annotated[dict[str, Any], BeforeValidator(lambda v: json_safe(dict(v or {})))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- samples ---------------------------------------------------------------------------


class SampleUri(Strict):
    uri: str = Field(
        min_length=1,
        max_length=2000,
        pattern=rf"^[A-Za-z][A-Za-z0-9+.-]*://[^{UNSAFE_CHARS}]+$",
        description="A blob URI of an allowed scheme (s3://...)",
    )
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SAFE_TEXT,
        description="Engineer keys only: a seed label (the sample goes to train unless split "
        "says otherwise)",
    )
    split: Split | None = Field(default=None, description="Engineer keys only")


class SampleUrisIn(Strict):
    items: list[SampleUri] = Field(min_length=1)


class Rejected(BaseModel):
    name: str
    reason: str


class IngestOut(BaseModel):
    added: int = Field(description="New samples stored")
    duplicates: list[str] = Field(description="Names of inputs already stored (not re-added)")
    rejected: list[Rejected] = Field(description="Inputs refused, with the reason: none stored")
    sample_ids: list[str] = Field(description="Ids of the new samples, in input order")


class SampleOut(BaseModel):
    sample_id: str = Field(validation_alias="id")
    source: str
    split: str
    original_name: str | None
    format: str
    media_type: str
    width: int
    height: int
    size_bytes: int
    created_at: datetime


# --- cycles ----------------------------------------------------------------------------


class LearningOverrides(LearningSettings):
    """Learning settings for this cycle: fields left out keep the server's configured values
    (the defaults shown are the built-in ones)."""

    model_config = ConfigDict(extra="forbid")


class CycleIn(Strict):
    learning: LearningOverrides | None = None


class CycleAccepted(BaseModel):
    id: int
    state: Literal["queued"]
    status_url: str


class CycleOut(BaseModel):
    id: int
    state: str
    step: str | None
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None = Field(None, description="what the current step is doing")
    trigger: str | None = Field(None, description="manual, schedule, feedback or drift")
    worker: str | None = Field(None, description="the step and worker running it")
    params: JsonObject
    metrics: JsonObject
    error: str | None
    dataset_version_in: str | None
    dataset_version_out: str | None
    mlflow_run_id: str | None
    created_at: datetime
    updated_at: datetime

    @field_validator("progress", mode="before")
    @classmethod
    def _clamp(cls, value: float | None) -> float:
        return min(max(value or 0.0, 0.0), 1.0)  # a row may hold none yet, or overshoot


class CyclePage(BaseModel):
    items: list[CycleOut]
    total: int
    limit: int
    offset: int


# --- dataset versions ------------------------------------------------------------------


class VersionOut(BaseModel):
    id: str
    parent_id: str | None
    num_rows: int
    stats: dict[str, Any]
    message: str | None
    manifest_uri: str
    checksum: str
    created_at: datetime


class VersionPage(BaseModel):
    items: list[VersionOut]
    total: int
    limit: int
    offset: int


class DiffRow(BaseModel):
    change: Literal["added", "removed", "relabeled", "reattributed"]
    label: str = Field(description="The class; 'a -> b' for relabeled rows")
    source: str = Field(description="The label source in version b (in a for removed rows)")
    count: int


class DiffCounts(BaseModel):
    added: int
    removed: int
    relabeled: int
    reattributed: int

    @field_validator("*", mode="before")
    @classmethod
    def _rows(cls, value: Any) -> Any:
        return getattr(value, "num_rows", value)  # read from a VersionDiff: its tables' rows


class DiffOut(BaseModel):
    a: str
    b: str
    counts: DiffCounts
    summary: list[DiffRow]


# --- models ----------------------------------------------------------------------------


class LabelRestoreOut(BaseModel):
    """What a champion move did to the labels (flywheel.cycle.champion)."""

    version: str = Field(description="The dataset version whose pseudo-labels are current again")
    moved_from: str | None = Field(description="The previous champion's dataset version")
    retracted: int = Field(description="Pseudo-labels accepted after it, now retracted")
    restored: int = Field(description="Its pseudo-labels written back")
    kept_human: int = Field(description="Its pseudo-labeled samples people have labeled since")


class ModelOut(BaseModel):
    version: str
    run_id: str | None
    aliases: list[str]
    tags: dict[str, str]
    created_at: datetime
    is_champion: bool
    labels: LabelRestoreOut | None = Field(
        default=None,
        description="Promote and rollback: the labels restored with the model (null: the "
        "model records no dataset version, or the answer is not a move)",
    )


class ModelList(BaseModel):
    champion: str | None
    versions: list[ModelOut] = Field(description="Newest first")


class PromoteIn(Strict):
    reason: str | None = Field(default=None, min_length=1, max_length=500, pattern=SAFE_TEXT)


# --- review ----------------------------------------------------------------------------


class ReviewOut(BaseModel):
    id: int
    sample_id: str
    cycle_id: int | None
    reason: str
    proposed_label: str | None
    score: float
    evidence: JsonObject
    state: str
    decided_label: str | None
    reviewer: str | None
    decided_at: datetime | None
    created_at: datetime


class ReviewPage(BaseModel):
    items: list[ReviewOut]
    total: int
    limit: int
    offset: int


class ReviewDecisionIn(Strict):
    decision: Literal["accept", "reject"]
    label: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SAFE_TEXT,
        description="Accept only: the label to record (default: the proposed one)",
    )
    reviewer: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=SAFE_TEXT,
        description="Default: the API key's name",
    )


# --- annotators ------------------------------------------------------------------------


class AnnotatorOut(BaseModel):
    annotator: str = Field(description="'<app>/<user>'")
    accuracy: float = Field(description="Dawid-Skene estimate of P(answer == truth)")
    n_votes: int
    gold_accuracy: float | None = Field(description="Agreement with seed/human labels")
    n_gold: int


class PairKappaOut(BaseModel):
    annotator_a: str
    annotator_b: str
    n_items: int
    kappa: float | None = Field(description="Cohen's kappa; null below the minimum overlap")


class AnnotatorReportOut(BaseModel):
    annotators: list[AnnotatorOut]
    pairwise_kappa: list[PairKappaOut]
    fleiss_kappa: float | None
    items_multi_rated: int
    samples: int
    votes: int


# --- quarantine ----------------------------------------------------------------------------


class QuarantinedOut(BaseModel):
    sample_id: str
    reason: str = Field(description="Why a cycle could not use it: missing, corrupt, undecodable")
    cycle_id: int | None = Field(description="The cycle that found it")
    created_at: datetime


class QuarantinePage(BaseModel):
    items: list[QuarantinedOut]
    total: int
    limit: int
    offset: int
