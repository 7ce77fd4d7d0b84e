"""The human review queue: list open items, record a reviewer's decision as a label.

Accepting writes a ``human`` label (it supersedes whatever the sample had, so it reaches
the next dataset version); rejecting retracts a machine-made label (pseudo or feedback),
so the sample is not trained on until someone labels it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select

from flywheel.db import Database, Label, ReviewItem
from flywheel.db.models import LabelSource, ReviewState, utcnow
from flywheel.errors import ConflictError, InvalidInputError, NotFoundError

REVIEW_METHOD = "review"


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    sample_id: str
    cycle_id: int | None
    reason: str
    proposed_label: str | None
    score: float
    evidence: dict[str, Any]
    state: str
    decided_label: str | None
    reviewer: str | None
    decided_at: datetime | None
    created_at: datetime

    @classmethod
    def from_row(cls, r: ReviewItem) -> ReviewRecord:
        return cls(
            r.id,
            r.sample_id,
            r.cycle_id,
            r.reason,
            r.proposed_label,
            r.score,
            dict(r.evidence or {}),
            r.state,
            r.decided_label,
            r.reviewer,
            r.decided_at,
            r.created_at,
        )


@dataclass(frozen=True)
class ReviewPage:
    items: list[ReviewRecord]
    total: int
    limit: int
    offset: int


def list_review(
    db: Database,
    state: ReviewState | None = ReviewState.OPEN,
    label: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ReviewPage:
    """One page of review items (oldest first), optionally of one state and proposed label."""
    query = select(ReviewItem)
    if state is not None:
        query = query.where(ReviewItem.state == state.value)
    if label is not None:
        query = query.where(ReviewItem.proposed_label == label)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = s.scalars(query.order_by(ReviewItem.id).limit(limit).offset(offset)).all()
        return ReviewPage([ReviewRecord.from_row(r) for r in rows], int(total), limit, offset)


def decide_review(
    db: Database,
    item_id: int,
    decision: Literal["accept", "reject"],
    reviewer: str,
    label: str | None,
    labels: Collection[str],
) -> ReviewRecord:
    """Record a decision on an open item; ``label`` defaults to the proposed one on accept."""
    with db.session() as s:
        item = s.get(ReviewItem, item_id, with_for_update=True)
        if item is None:
            raise NotFoundError(f"no review item {item_id}")
        if item.state != ReviewState.OPEN.value:
            raise ConflictError(f"review item {item_id} was already decided ({item.state})")
        current = s.scalars(
            select(Label).where(Label.sample_id == item.sample_id).order_by(Label.id.desc())
        ).first()
        if decision == "accept":
            chosen = label or item.proposed_label
            if chosen is None:
                raise InvalidInputError("this item proposes no label: send the label to accept")
            if chosen not in labels:
                raise InvalidInputError(f"label {chosen!r} is not in the label set")
            s.add(
                Label(
                    sample_id=item.sample_id,
                    label=chosen,
                    source=LabelSource.HUMAN.value,
                    confidence=1.0,
                    method=REVIEW_METHOD,
                    annotator=reviewer,
                    supersedes_id=current.id if current else None,
                    evidence={"review_item": item.id, "proposed": item.proposed_label},
                )
            )
            item.state = ReviewState.ACCEPTED.value
            item.decided_label = chosen
        elif decision == "reject":
            if label is not None:
                raise InvalidInputError("reject takes no label: accept with the right label")
            machine_made = (LabelSource.PSEUDO.value, LabelSource.FEEDBACK.value)
            if current is not None and not current.retracted and current.source in machine_made:
                s.add(
                    Label(
                        sample_id=item.sample_id,
                        label=current.label,
                        source=current.source,
                        confidence=0.0,
                        method=REVIEW_METHOD,
                        annotator=reviewer,
                        supersedes_id=current.id,
                        retracted=True,
                        evidence={"review_item": item.id},
                    )
                )
            item.state = ReviewState.REJECTED.value
        else:
            raise InvalidInputError(f"unknown decision {decision!r}: use accept or reject")
        item.reviewer = reviewer
        item.decided_at = utcnow()
        s.flush()
        return ReviewRecord.from_row(item)


def label_set(db: Database) -> list[str]:
    """The classes people have labeled (seed and human labels): what corrections may use."""
    sources = (LabelSource.SEED.value, LabelSource.HUMAN.value)
    with db.session() as s:
        rows = s.scalars(select(Label.label).where(Label.source.in_(sources)).distinct())
        return sorted(rows)
