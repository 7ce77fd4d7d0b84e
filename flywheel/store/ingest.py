"""Ingest images into the store: validate, deduplicate, assign splits, record seed labels.

Sources (:mod:`flywheel.store.ingest_sources`) produce ``Candidate``s (a name, a way to read
the bytes, maybe a label and split); ``ingest_candidates`` does the rest the same way for
every source. Each batch is all or nothing: its new blobs are deleted again if its database
transaction fails, and a rejected file never reaches the store or the database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from flywheel.config import IngestSettings
from flywheel.db import Database, GroundTruth, Label, Sample
from flywheel.db.labels import current_labels_query
from flywheel.db.models import LabelSource, Split
from flywheel.errors import (
    FlywheelError,
    InvalidInputError,
    UnsupportedMediaError,
)
from flywheel.store.blobs import BlobStore, sha256_hex
from flywheel.store.images import ImageInfo, inspect_image

Progress = Callable[[int, int], None]
# Reading and decoding overlap file-system latency; PIL releases the GIL while decoding.
READ_THREADS = 4


@dataclass(frozen=True)
class Candidate:
    name: str  # shown in the report: a path, URI or synthetic name
    read: Callable[[], bytes]
    label: str | None = None
    split: str | None = None  # explicit split wins over the SplitPlan
    annotator: str | None = None  # who gave the label (an imported human label)


@dataclass(frozen=True)
class SplitPlan:
    """How labeled candidates without an explicit split are divided.

    Per class: ``test_fraction`` goes to the frozen test split; of the rest,
    ``labels_per_class`` become seed labels (train) and the others join the pool with their
    labels kept aside as hidden truth. ``labels_per_class=None`` keeps every label.
    """

    labels_per_class: int | None = None
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise InvalidInputError("test fraction must be in [0, 1)")
        if self.labels_per_class is not None and self.labels_per_class < 0:
            raise InvalidInputError("labels per class must be >= 0")


@dataclass(frozen=True)
class Rejection:
    name: str
    reason: str
    not_an_image: bool = False  # the bytes are no image of an allowed format at all


@dataclass
class IngestReport:
    added: int = 0
    labels_added: int = 0
    duplicates: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    by_split: Counter[str] = field(default_factory=Counter)
    sample_ids: list[str] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)  # the sample each duplicate is

    @property
    def seen(self) -> int:
        return self.added + len(self.duplicates) + len(self.rejected)


@dataclass(frozen=True)
class _Planned:
    candidate: Candidate
    split: str
    label: str | None  # visible label (train/val/test)
    hidden_label: str | None  # pool sample's truth, kept aside
    error: str | None = None  # why this candidate is rejected before it is read


def plan_splits(candidates: Sequence[Candidate], plan: SplitPlan) -> list[_Planned]:
    """Decide every candidate's split; deterministic for a given ``plan.seed``."""
    planned: list[_Planned | None] = [None] * len(candidates)
    by_class: dict[str, list[int]] = defaultdict(list)
    valid_splits = {s.value for s in Split}
    for i, c in enumerate(candidates):
        if c.split is not None:
            if c.split not in valid_splits:
                planned[i] = _Planned(c, c.split, None, None, f"unknown split {c.split!r}")
            elif c.split == Split.POOL:
                planned[i] = _Planned(c, Split.POOL, None, c.label)
            else:
                planned[i] = _Planned(c, c.split, c.label, None)
        elif c.label is None:
            planned[i] = _Planned(c, Split.POOL, None, None)
        else:
            by_class[c.label].append(i)
    rng = np.random.default_rng(plan.seed)
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        rng.shuffle(idx)
        n_test = round(len(idx) * plan.test_fraction)
        rest = idx[n_test:]
        n_train = len(rest) if plan.labels_per_class is None else plan.labels_per_class
        for j in idx[:n_test]:
            planned[j] = _Planned(candidates[j], Split.TEST, label, None)
        for j in rest[:n_train]:
            planned[j] = _Planned(candidates[j], Split.TRAIN, label, None)
        for j in rest[n_train:]:
            planned[j] = _Planned(candidates[j], Split.POOL, None, label)
    return [p for p in planned if p is not None]


def ingest_candidates(
    db: Database,
    store: BlobStore,
    candidates: Iterable[Candidate],
    source: str,
    settings: IngestSettings,
    plan: SplitPlan = SplitPlan(),
    progress: Progress | None = None,
    label_source: str = LabelSource.SEED.value,
) -> IngestReport:
    """Validate, store and record ``candidates`` in batches; one report for all.

    Their labels are written as ``label_source``: ``seed`` for a data set's own labels,
    ``human`` for labels people made in another tool (Label Studio, COCO), which also label
    a sample already in the project (a duplicate) when they say something new about it."""
    candidates = list(candidates)
    planned = plan_splits(candidates, plan)
    report = IngestReport()
    total = len(planned)
    done = 0
    for start in range(0, total, settings.batch_size):
        batch = planned[start : start + settings.batch_size]
        _ingest_batch(db, store, batch, source, settings, report, label_source)
        done += len(batch)
        if progress:
            progress(done, total)
    return report


def _load(item: _Planned, settings: IngestSettings) -> tuple[bytes, ImageInfo] | Rejection:
    """Read and fully decode one candidate, or say why it cannot be accepted."""
    name = item.candidate.name
    if item.error is not None:
        return Rejection(name, item.error)
    if item.split != Split.POOL and item.label is None:
        return Rejection(name, f"split {item.split} needs a label")
    try:
        data = item.candidate.read()
        info = inspect_image(
            data, settings.allowed_formats, settings.max_image_bytes, settings.max_image_pixels
        )
    except UnsupportedMediaError as exc:
        return Rejection(name, str(exc), not_an_image=True)
    except FlywheelError as exc:
        return Rejection(name, str(exc))
    except OSError as exc:
        return Rejection(name, f"cannot read: {exc.strerror or exc}")
    except Exception as exc:  # a remote filesystem's own errors: still just this one file
        return Rejection(name, f"cannot read: {type(exc).__name__}")
    return data, info


def _ingest_batch(
    db: Database,
    store: BlobStore,
    batch: list[_Planned],
    source: str,
    settings: IngestSettings,
    report: IngestReport,
    label_source: str,
) -> None:
    valid: dict[str, tuple[_Planned, bytes, ImageInfo]] = {}
    relabel: dict[str, _Planned] = {}  # samples already here that an import labels
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        loaded = list(pool.map(lambda item: _load(item, settings), batch))
    for item, outcome in zip(batch, loaded, strict=True):
        if isinstance(outcome, Rejection):
            report.rejected.append(outcome)
            continue
        data, info = outcome
        sha = sha256_hex(data)
        if sha in valid:
            report.duplicates.append(item.candidate.name)
            report.duplicate_ids.append(sha)
            continue
        valid[sha] = (item, data, info)
    if not valid:
        return
    with db.session() as session:
        existing = set(session.scalars(select(Sample.id).where(Sample.id.in_(list(valid)))))
    for sha in existing:
        item = valid.pop(sha)[0]
        report.duplicates.append(item.candidate.name)
        report.duplicate_ids.append(sha)
        if label_source != LabelSource.SEED.value and item.label is not None:
            relabel[sha] = item
    created: list[str] = []
    try:
        rows: list[object] = []
        labels: list[Label] = []
        blobs = store.put_many([data for _, data, _ in valid.values()])
        created.extend(b.sha256 for b in blobs if b.created)
        for blob, (sha, (item, data, info)) in zip(blobs, valid.items(), strict=True):
            rows.append(
                Sample(
                    id=sha,
                    blob_uri=blob.uri,
                    source=source,
                    split=str(item.split),
                    original_name=item.candidate.name,
                    format=info.format,
                    width=info.width,
                    height=info.height,
                    size_bytes=len(data),
                )
            )
            if item.hidden_label is not None:
                rows.append(GroundTruth(sample_id=sha, label=item.hidden_label))
            if item.label is not None:
                labels.append(_label_row(sha, item, source, label_source))
        with db.session() as session:
            # Samples first: labels and ground truth reference them.
            session.add_all([r for r in rows if isinstance(r, Sample)])
            session.flush()
            session.add_all([r for r in rows if not isinstance(r, Sample)] + labels)
            labels += _new_labels_for_existing(session, relabel, source, label_source)
    except BaseException:
        for sha in created:  # leave no orphan blobs behind a failed transaction
            store.delete(sha)
        raise
    for sha, (item, _, _) in valid.items():
        report.sample_ids.append(sha)
        report.by_split[str(item.split)] += 1
    report.added += len(valid)
    report.labels_added += len(labels)


def _label_row(sha: str, item: _Planned, source: str, label_source: str) -> Label:
    return Label(
        sample_id=sha,
        label=item.label,
        source=label_source,
        confidence=1.0,
        method=f"ingest:{source}",
        annotator=item.candidate.annotator,
    )


def _new_labels_for_existing(
    session: Session, relabel: dict[str, _Planned], source: str, label_source: str
) -> list[Label]:
    """Label rows for samples already in the project, where the import says something new
    (a sample whose current label is already this one from this source is left alone)."""
    if not relabel:
        return []
    current = {
        lab.sample_id: (lab.label, lab.source)
        for lab in session.scalars(current_labels_query(sample_ids=list(relabel)))
    }
    rows = [
        _label_row(sha, item, source, label_source)
        for sha, item in relabel.items()
        if current.get(sha) != (item.label, label_source)
    ]
    session.add_all(rows)
    return rows
