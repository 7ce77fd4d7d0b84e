"""A cycle's selection becomes labels and review items, exactly once per cycle."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from flywheel.cycle.state import record_output_in
from flywheel.db import Cycle, Label, ReviewItem
from flywheel.db.models import LabelSource, ReviewReason, ReviewState, utcnow
from flywheel.learn.data import CycleData
from flywheel.select.outcome import SelectionOutcome
from flywheel.select.result import Decision
from flywheel.workspace import Workspace

PSEUDO_METHOD = "knn+classifier"


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
    labels: list[Label] = []
    reviews: list[ReviewItem] = []
    res = outcome.result if outcome is not None else None
    for i, sid in enumerate(data.pool_ids if outcome is not None else []):
        assert res is not None and outcome is not None
        decision = int(res.decision[i])
        name = data.classes[int(res.label[i])]
        current = data.pool_current.at(i)
        evidence = outcome.evidence(i)
        if decision == Decision.ACCEPTED:
            if current is not None and current[0] == name:
                counts["kept"] += 1
                continue
            labels.append(
                Label(
                    sample_id=sid,
                    label=name,
                    source=LabelSource.PSEUDO.value,
                    confidence=float(res.score[i]),
                    method=PSEUDO_METHOD,
                    cycle_id=cycle_id,
                    evidence=evidence,
                )
            )
            counts["new"] += 1
        elif current is not None:
            labels.append(
                Label(
                    sample_id=sid,
                    label=current[0],
                    source=LabelSource.PSEUDO.value,
                    confidence=0.0,
                    method=PSEUDO_METHOD,
                    cycle_id=cycle_id,
                    evidence=evidence,
                    retracted=True,
                )
            )
            counts["retracted"] += 1
        if decision == Decision.NEEDS_REVIEW:
            reviews.append(
                ReviewItem(
                    sample_id=sid,
                    cycle_id=cycle_id,
                    reason=ReviewReason.UNCERTAIN.value,
                    proposed_label=name,
                    score=float(res.score[i]),
                    evidence=evidence,
                )
            )
            counts["review"] += 1
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
        s.add_all(labels + kept)
        if summary is not None:
            record_output_in(s, cycle_id, "selection", {**summary, "labels_written": counts})
    return counts
