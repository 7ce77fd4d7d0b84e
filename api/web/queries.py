"""Small read-only queries the pages need beyond the library's, each paged or bounded by
the ids of one page: no page reads a whole table."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from flywheel.datasets.versions import VersionInfo
from flywheel.db import Cycle, Database, DatasetVersion, Label, ReviewItem
from flywheel.db.labels import is_current
from flywheel.db.models import ReviewState


@dataclass(frozen=True)
class CycleRow:
    id: int
    state: str
    trigger: str | None
    metrics: dict[str, Any]
    dataset_version_out: str | None
    mlflow_run_id: str | None
    error: str | None
    created_at: Any
    updated_at: Any


def _cycle_row(c: Cycle) -> CycleRow:
    return CycleRow(
        c.id,
        c.state,
        c.trigger,
        dict(c.metrics or {}),
        c.dataset_version_out,
        c.mlflow_run_id,
        c.error,
        c.created_at,
        c.updated_at,
    )


def cycles_page(db: Database, limit: int, offset: int) -> tuple[list[CycleRow], int]:
    """Newest first, with the total count."""
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Cycle)) or 0
        rows = s.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit).offset(offset))
        return [_cycle_row(c) for c in rows], int(total)


def cycles_signature(db: Database) -> tuple[int, int, str]:
    """Changes whenever a cycle is added or moves on: (count, newest id, newest update)."""
    with db.session() as s:
        count, newest, updated = s.execute(
            select(func.count(), func.max(Cycle.id), func.max(Cycle.updated_at))
        ).one()
    return int(count or 0), int(newest or 0), str(updated)


def recent_cycles(db: Database, limit: int) -> list[CycleRow]:
    """The newest ``limit`` cycles, oldest first (for the chart)."""
    rows, _ = cycles_page(db, limit, 0)
    return rows[::-1]


def cycle_by_id(db: Database, cycle_id: int) -> CycleRow | None:
    with db.session() as s:
        c = s.get(Cycle, cycle_id)
        return _cycle_row(c) if c is not None else None


def latest_finished_cycle(db: Database) -> int | None:
    """The newest cycle that got past selection: the one whose embeddings insights use."""
    with db.session() as s:
        return s.scalar(select(func.max(Cycle.id)).where(Cycle.dataset_version_out.is_not(None)))


def versions_page(db: Database, limit: int, offset: int) -> tuple[list[VersionInfo], int]:
    """Dataset versions, newest first, with the total count."""
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(DatasetVersion)) or 0
        rows = s.scalars(
            select(DatasetVersion)
            .order_by(DatasetVersion.created_at.desc(), DatasetVersion.id)
            .limit(limit)
            .offset(offset)
        )
        return [VersionInfo.from_row(r) for r in rows], int(total)


def current_labels(db: Database, sample_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """sample id -> (label, source) of its current label (the library's rule: its newest
    row, unless a retraction), for the given samples only; samples without one are left out."""
    if not sample_ids:
        return {}
    query = select(Label.sample_id, Label.label, Label.source).where(
        is_current(sorted(set(sample_ids)))
    )
    with db.session() as s:
        rows = s.execute(query).all()
    return {sid: (label, source) for sid, label, source in rows}


def open_review_samples(db: Database, sample_ids: Collection[str]) -> dict[str, int]:
    """sample id -> open review item id, for the given samples only."""
    if not sample_ids:
        return {}
    with db.session() as s:
        rows = s.execute(
            select(ReviewItem.sample_id, ReviewItem.id).where(
                ReviewItem.sample_id.in_(sorted(set(sample_ids))),
                ReviewItem.state == ReviewState.OPEN.value,
            )
        ).all()
    return {sid: item_id for sid, item_id in rows}


def open_review_by_label(db: Database) -> dict[str | None, int]:
    """Open items per proposed label (one grouped count: the class filter's numbers)."""
    with db.session() as s:
        rows = s.execute(
            select(ReviewItem.proposed_label, func.count())
            .where(ReviewItem.state == ReviewState.OPEN.value)
            .group_by(ReviewItem.proposed_label)
        ).all()
    return {label: int(n) for label, n in rows}
