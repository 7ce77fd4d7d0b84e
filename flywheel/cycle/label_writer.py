"""A cycle's selection becomes labels and review items, exactly once per cycle."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import insert, select

from flywheel.cycle.state import record_output_in
from flywheel.db import Cycle, Label, ReviewItem
from flywheel.db.models import LabelSource, ReviewReason, ReviewState, utcnow
from flywheel.learn.data import CycleData
from flywheel.select.outcome import SelectionOutcome
from flywheel.select.result import Decision
from flywheel.workspace import Workspace

PSEUDO_METHOD = "knn+classifier"
WRITE_BATCH = 5_000  # label rows inserted at a time


def _label_rows(
    data: CycleData, outcome: SelectionOutcome | None, cycle_id: int, counts: dict[str, int]
) -> Iterator[dict[str, Any]]:
    """The label rows to insert, one pool sample at a time; ``counts`` says what they were.

    An accepted sample gets a new ``pseudo`` label unless its current pseudo-label already
    says the same; a pseudo-labeled sample that is no longer accepted gets a retraction."""
    if outcome is None:
        return
    res = outcome.result
    for i, sid in enumerate(data.pool_ids):
        accepted = res.decision[i] == Decision.ACCEPTED
        current = data.pool_current.at(i)
        name = data.classes[int(res.label[i])]
        if accepted and current is not None and current[0] == name:
            counts["kept"] += 1
        elif accepted or current is not None:
            counts["new" if accepted else "retracted"] += 1
            yield {
                "sample_id": sid,
                "label": name if accepted else current[0],  # type: ignore[index]
                "source": LabelSource.PSEUDO.value,
                "confidence": float(res.score[i]) if accepted else 0.0,
                "method": PSEUDO_METHOD,
                "cycle_id": cycle_id,
                "evidence": outcome.evidence(i),
                "retracted": not accepted,
                "created_at": utcnow(),
            }


def _review_items(
    data: CycleData, outcome: SelectionOutcome | None, cycle_id: int
) -> list[ReviewItem]:
    if outcome is None:
        return []
    res = outcome.result
    return [
        ReviewItem(
            sample_id=data.pool_ids[i],
            cycle_id=cycle_id,
            reason=ReviewReason.UNCERTAIN.value,
            proposed_label=data.classes[int(res.label[i])],
            score=float(res.score[i]),
            evidence=outcome.evidence(i),
        )
        for i in np.flatnonzero(res.decision == Decision.NEEDS_REVIEW)
    ]


def write_selection(
    ws: Workspace,
    cycle_id: int,
    data: CycleData,
    outcome: SelectionOutcome | None,
    summary: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Pseudo-labels and review items for this cycle; history is never rewritten.

    An accepted sample gets a new ``pseudo`` label unless its current pseudo-label already
    says the same; a pseudo-labeled sample that is no longer accepted gets a retraction.
    With ``summary``, ``outputs["selection"]`` (the summary plus these counts) commits in
    the same transaction: the labels are written exactly once per cycle.
    """
    counts = {"new": 0, "kept": 0, "retracted": 0, "review": 0}
    reviews = _review_items(data, outcome, cycle_id)  # at most the queue's length
    counts["review"] = len(reviews)
    with ws.db.session() as s:
        if summary is not None:
            # A second writer (a duplicate delivery racing this one) finds the marker; the
            # lock keeps both racers from reading "no selection" and both writing.
            ws.db.lock_for_write(s, "cycles")
            cycle = s.get(Cycle, cycle_id, with_for_update=True)
            if cycle is not None and "selection" in (cycle.outputs or {}):
                return dict(cycle.outputs["selection"]["labels_written"])
        queued = [r.sample_id for r in reviews]
        # A sample sits in the queue once. The newest cycle's evidence replaces an older
        # cycle's; an open feedback conflict (users' votes) stays and the cycle's is dropped.
        conflicted: set[str] = set()
        if queued:
            for old in s.scalars(
                select(ReviewItem).where(
                    ReviewItem.state == ReviewState.OPEN.value, ReviewItem.sample_id.in_(queued)
                )
            ):
                if old.reason == ReviewReason.FEEDBACK_CONFLICT:
                    conflicted.add(old.sample_id)
                else:
                    old.state = ReviewState.SUPERSEDED.value
                    old.decided_at = utcnow()
        kept = [r for r in reviews if r.sample_id not in conflicted]
        # Queued in the strategy's order (ids ascend): "as queued" lists the most useful first.
        kept.sort(key=lambda r: (r.evidence or {}).get("review", {}).get("rank", 0))
        counts["review"] -= len(reviews) - len(kept)
        # Labels go in batches of plain rows: a first selection over a million samples
        # accepts most of them, and as ORM objects with their evidence they would not fit.
        rows = _label_rows(data, outcome, cycle_id, counts)
        while batch := list(itertools.islice(rows, WRITE_BATCH)):
            s.execute(insert(Label), batch)
        s.add_all(kept)
        if summary is not None:
            record_output_in(s, cycle_id, "selection", {**summary, "labels_written": counts})
    return counts
