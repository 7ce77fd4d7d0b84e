"""The human review queue: list open items, record a reviewer's decision as a label.

Accepting writes a ``human`` label (it supersedes whatever the sample had, so it reaches
the next dataset version); rejecting retracts a machine-made label (pseudo or feedback),
so the sample is not trained on until someone labels it. A ``label_audit`` item proposes
to change a label people made: rejecting it means "the label stands" and retracts nothing.

Order: ``"queued"`` is the queue as it was filled (by id); ``"helpful"`` puts first what a
reviewer's minute helps most (see :func:`helpful_order`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select

from flywheel.db import Database, Label, ReviewItem
from flywheel.db.labels import DERIVED_SOURCES, GOLD_SOURCES
from flywheel.db.models import LabelSource, ReviewReason, ReviewState, utcnow
from flywheel.errors import ConflictError, InvalidInputError, NotFoundError

REVIEW_METHOD = "review"
# Items that question a label people already gave (users' votes disagree, or the audit
# says it is likely wrong) come first: a wrong human label is trained on at full weight.
FIRST_REASONS = (ReviewReason.FEEDBACK_CONFLICT.value, ReviewReason.LABEL_AUDIT.value)


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


def helpful_order(items: list[tuple[int, str, str | None, float]]) -> list[int]:
    """Item ids, most helpful to review first. ``items``: (id, reason, proposed label, key),
    where a lower key means less certain (more to gain from a human).

    Feedback conflicts and label-audit items first, then the rest; within each, labels take
    turns (round-robin over proposed labels, each label's items least certain first), so a
    page spans the classes instead of the hardest class's hundred look-alikes.
    """
    ranked = sorted(items, key=lambda it: (it[1] not in FIRST_REASONS, it[3], it[0]))
    seen: dict[tuple[bool, str | None], int] = {}
    keyed = []
    for id_, reason, label, key in ranked:
        group = (reason not in FIRST_REASONS, label)
        turn = seen.get(group, 0)  # this item's place within its label's own list
        seen[group] = turn + 1
        keyed.append(((group[0], turn, key, id_), id_))
    return [id_ for _, id_ in sorted(keyed)]


def _certainty(reason: str, score: float, evidence: dict[str, Any] | None) -> float:
    """Lower = more worth a reviewer's look. An audit item's score is the suggested class's
    probability; its doubt is the given label's own probability (self-confidence)."""
    if reason == ReviewReason.LABEL_AUDIT:
        return float((evidence or {}).get("self_confidence", 1.0 - score))
    return float(score)


def list_review(
    db: Database,
    state: ReviewState | None = ReviewState.OPEN,
    label: str | None = None,
    limit: int = 50,
    offset: int = 0,
    order: Literal["queued", "helpful"] = "queued",
) -> ReviewPage:
    """One page of review items, optionally of one state and proposed label.

    ``order="queued"``: as queued (by id, oldest first); ``"helpful"``: see
    :func:`helpful_order`, computed over all matching items, then paged.
    """
    if order not in ("queued", "helpful"):
        raise InvalidInputError(f"unknown order {order!r}: use queued or helpful")
    query = select(ReviewItem)
    if state is not None:
        query = query.where(ReviewItem.state == state.value)
    if label is not None:
        query = query.where(ReviewItem.proposed_label == label)
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        if order == "queued":
            rows = s.scalars(query.order_by(ReviewItem.id).limit(limit).offset(offset)).all()
            return ReviewPage([ReviewRecord.from_row(r) for r in rows], int(total), limit, offset)
        # Only the columns the order needs; evidence (neighbour lists, votes) only for audit
        # items, whose key lives there: tens of thousands of items stay cheap.
        cols = query.with_only_columns(
            ReviewItem.id, ReviewItem.reason, ReviewItem.proposed_label, ReviewItem.score
        )
        audit = dict(
            s.execute(
                query.where(ReviewItem.reason == ReviewReason.LABEL_AUDIT.value).with_only_columns(
                    ReviewItem.id, ReviewItem.evidence
                )
            ).all()
        )
        items = [
            (id_, reason, proposed, _certainty(reason, score, audit.get(id_)))
            for id_, reason, proposed, score in s.execute(cols).all()
        ]
        page = helpful_order(items)[offset : offset + limit]
        rows_by_id = {r.id: r for r in s.scalars(select(ReviewItem).where(ReviewItem.id.in_(page)))}
        records = [ReviewRecord.from_row(rows_by_id[i]) for i in page]
        return ReviewPage(records, int(total), limit, offset)


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
            if (
                item.reason != ReviewReason.LABEL_AUDIT  # the audit was wrong: the label stands
                and current is not None
                and not current.retracted
                and current.source in DERIVED_SOURCES
            ):
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
    with db.session() as s:
        rows = s.scalars(select(Label.label).where(Label.source.in_(GOLD_SOURCES)).distinct())
        return sorted(rows)
