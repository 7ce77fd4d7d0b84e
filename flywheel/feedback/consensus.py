"""Users' feedback on predictions -> consensus labels, review items and annotator statistics.

The database edge of ``flywheel.feedback.dawid_skene`` (the EM numerics, re-exported here) and
``flywheel.feedback.annotators`` (agreement statistics). Each feedback row is a vote by the
annotator ``"<app_id>/<user_id>"`` (``app_id`` empty when None) on its prediction's sample:
``confirm`` votes for the predicted label, ``correct`` for the given label, ``reject`` is
the censored vote "not the predicted label" (see ``flywheel.feedback.dawid_skene`` for why).
A sample's current seed/human label is gold: it measures annotators, and such a sample is
never relabeled by feedback; neither is any sample of the frozen test split. The classes
are the current seed/human labels plus every label a vote names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flywheel.config import ConsensusSettings
from flywheel.db import Database, Feedback, Label, Prediction, ReviewItem, Sample
from flywheel.db.labels import GOLD_SOURCES, is_current, newest_label_ids
from flywheel.db.models import FeedbackKind, LabelSource, ReviewReason, ReviewState, Split, utcnow
from flywheel.feedback.annotators import PairKappa, fleiss_kappa, pairwise_kappa, ratings_by_item
from flywheel.feedback.dawid_skene import (
    AnnotatorReliability,
    ConsensusResult,
    ItemConsensus,
    Vote,
    dawid_skene,
    majority_vote,
)

__all__ = [
    "AnnotatorReliability",
    "AnnotatorReport",
    "ConsensusReport",
    "ConsensusResult",
    "ItemConsensus",
    "PairKappa",
    "Vote",
    "annotator_report",
    "dawid_skene",
    "majority_vote",
    "resolve_feedback",
]

METHOD = "dawid_skene"
# A feedback label is rewritten only when its confidence moves at this many decimals:
# new votes elsewhere shift every posterior a little, which must not churn label rows.
CONFIDENCE_DECIMALS = 2


@dataclass
class ConsensusReport:
    samples: int = 0  # samples with feedback
    annotators: int = 0
    labels_written: int = 0  # new feedback labels (new or changed consensus)
    unchanged: int = 0  # confident consensus already the sample's current label
    retracted: int = 0  # feedback labels whose consensus fell below min_confidence
    review_opened: int = 0  # new feedback_conflict review items
    review_updated: int = 0  # open feedback_conflict items whose evidence changed
    review_closed: int = 0  # open feedback_conflict items now resolved (consensus or gold)
    # gold-labeled or test-split samples (never relabeled), or conflicts a reviewer dismissed
    measured_only: int = 0
    reliability: list[AnnotatorReliability] = field(default_factory=list)


@dataclass
class AnnotatorReport:
    annotators: list[AnnotatorReliability]  # sorted by annotator id
    pairwise_kappa: list[PairKappa]  # pairs sharing >= 1 sample; kappa None below overlap
    fleiss_kappa: float | None  # over samples with >= 2 (non-reject) ratings
    items_multi_rated: int  # samples with >= 2 (non-reject) ratings
    samples: int  # samples with feedback
    votes: int  # one per (sample, annotator): the newest feedback


@dataclass
class _Snapshot:
    votes: list[Vote]  # sorted by (item, annotator)
    kinds: dict[tuple[str, str], str]  # (sample, annotator) -> feedback kind of the vote
    gold: dict[str, str]  # voted sample -> its current seed/human label
    classes: list[str]
    newest: dict[str, Label]  # voted sample -> its newest label row (retracted or not)
    splits: dict[str, str]


def annotator_id(app_id: str | None, user_id: str) -> str:
    return f"{app_id or ''}/{user_id}"


def _load(s: Session) -> _Snapshot:
    rows = s.execute(
        select(
            Feedback.user_id,
            Feedback.app_id,
            Feedback.kind,
            Feedback.label,
            Prediction.sample_id,
            Prediction.label,
        )
        .join(Prediction, Feedback.prediction_id == Prediction.id)
        .order_by(Feedback.created_at, Feedback.id)
    ).all()
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    # Oldest first (ties by id), so the newest feedback per (sample, annotator) wins.
    for user, app, kind, label, sid, predicted in rows:
        if kind in (FeedbackKind.CONFIRM, FeedbackKind.REJECT):
            latest[(sid, annotator_id(app, user))] = (kind, predicted)
        elif kind == FeedbackKind.CORRECT and label:  # a correction without label says nothing
            latest[(sid, annotator_id(app, user))] = (kind, label)
    votes = [
        Vote(sid, ann, label, reject=kind == FeedbackKind.REJECT)
        for (sid, ann), (kind, label) in sorted(latest.items())
    ]

    voted = select(Prediction.sample_id).join(Feedback, Feedback.prediction_id == Prediction.id)
    newest = {
        lab.sample_id: lab
        for lab in s.scalars(select(Label).where(Label.id.in_(newest_label_ids(voted))))
    }
    human_classes = s.scalars(
        select(Label.label).distinct().where(is_current(), Label.source.in_(GOLD_SOURCES))
    ).all()
    gold = {
        sid: lab.label
        for sid, lab in newest.items()
        if not lab.retracted and lab.source in GOLD_SOURCES
    }
    return _Snapshot(
        votes=votes,
        kinds={key: kind for key, (kind, _) in latest.items()},
        gold=gold,
        classes=sorted(set(human_classes) | {v.label for v in votes}),
        newest=newest,
        splits=dict(s.execute(select(Sample.id, Sample.split).where(Sample.id.in_(voted))).all()),
    )


def _evidence(
    snap: _Snapshot, votes: list[Vote], post: ItemConsensus, result: ConsensusResult
) -> dict[str, Any]:
    return {
        "votes": [
            {
                "annotator": v.annotator,
                "label": v.label,
                "kind": snap.kinds[(v.item, v.annotator)],
                "reliability": round(result.annotators[v.annotator].accuracy, 4),
            }
            for v in votes
        ],
        # Rounded, and classes with ~0 mass left out: evidence stays small with many classes.
        "posterior": {c: r for c, p in post.distribution.items() if (r := round(p, 4)) > 0},
    }


def resolve_feedback(db: Database, settings: ConsensusSettings) -> ConsensusReport:
    """Turn all feedback into feedback labels and review items, in one transaction.

    Per sample with feedback, neither gold-labeled nor in the test split: a posterior of at
    least ``min_confidence`` becomes a ``feedback`` label (written only when label, source
    or confidence at ``CONFIDENCE_DECIMALS`` differ from the current label, so a re-run
    without new feedback writes nothing; ``supersedes_id`` is the sample's newest row) and
    closes an open ``feedback_conflict`` item; a lower posterior retracts a current feedback
    label and opens a ``feedback_conflict`` review item, or updates the open one in place.
    With fewer than two classes there is nothing to decide: annotators are only measured.
    """
    report = ConsensusReport()
    with db.session() as s:
        snap = _load(s)
        if not snap.votes:
            return report
        result = dawid_skene(snap.votes, snap.classes, snap.gold, settings)
        by_item: dict[str, list[Vote]] = {}
        for v in snap.votes:
            by_item.setdefault(v.item, []).append(v)
        report.samples, report.annotators = len(by_item), len(result.annotators)
        report.reliability = list(result.annotators.values())
        if len(snap.classes) < 2:
            return report
        open_items: dict[str, ReviewItem] = {}
        for r in s.scalars(
            select(ReviewItem)
            .where(
                ReviewItem.reason == ReviewReason.FEEDBACK_CONFLICT.value,
                ReviewItem.state == ReviewState.OPEN.value,
            )
            .order_by(ReviewItem.id)
        ):
            open_items.setdefault(r.sample_id, r)  # NULL cycle_id: deduped here, not by SQL
        # A reviewer who rejected a conflict said no label applies: do not queue it again.
        dismissed = set(
            s.scalars(
                select(ReviewItem.sample_id).where(
                    ReviewItem.reason == ReviewReason.FEEDBACK_CONFLICT.value,
                    ReviewItem.state == ReviewState.REJECTED.value,
                )
            )
        )

        for sid, votes in by_item.items():
            item = open_items.get(sid)
            if sid in snap.gold or snap.splits.get(sid) == Split.TEST:
                report.measured_only += 1
                if item is not None:  # a human label has settled it since
                    item.state, item.decided_at = ReviewState.SUPERSEDED.value, utcnow()
                    report.review_closed += 1
                continue
            if sid in dismissed and item is None:
                report.measured_only += 1
                continue
            post = result.items[sid]
            evidence = _evidence(snap, votes, post, result)
            newest = snap.newest.get(sid)
            current = newest if newest is not None and not newest.retracted else None
            fed = (
                current if current is not None and current.source == LabelSource.FEEDBACK else None
            )
            if post.confidence >= settings.min_confidence:
                if (
                    fed is not None
                    and fed.label == post.label
                    and round(fed.confidence, CONFIDENCE_DECIMALS)
                    == round(post.confidence, CONFIDENCE_DECIMALS)
                ):
                    report.unchanged += 1
                else:
                    s.add(_label(sid, post.label, post.confidence, evidence, newest))
                    report.labels_written += 1
                if item is not None:  # the conflict resolved itself: nothing left to review
                    item.state, item.decided_at = ReviewState.SUPERSEDED.value, utcnow()
                    report.review_closed += 1
                continue
            if fed is not None:  # stop training on a label the votes no longer support
                conf = post.distribution.get(fed.label, 0.0)  # its class may be gone
                s.add(_label(sid, fed.label, conf, evidence, newest, retracted=True))
                report.retracted += 1
            score = round(post.confidence, 4)
            if item is None:
                s.add(
                    ReviewItem(
                        sample_id=sid,
                        cycle_id=None,
                        reason=ReviewReason.FEEDBACK_CONFLICT.value,
                        proposed_label=post.label,
                        score=score,
                        evidence=evidence,
                    )
                )
                report.review_opened += 1
            elif (item.proposed_label, item.score, item.evidence) != (post.label, score, evidence):
                item.proposed_label, item.score, item.evidence = post.label, score, evidence
                report.review_updated += 1
    return report


def _label(
    sid: str,
    label: str,
    confidence: float,
    evidence: dict[str, Any],
    newest: Label | None,
    retracted: bool = False,
) -> Label:
    return Label(
        sample_id=sid,
        label=label,
        source=LabelSource.FEEDBACK.value,
        confidence=float(confidence),
        method=METHOD,
        annotator=None,
        supersedes_id=newest.id if newest is not None else None,
        evidence=evidence,
        retracted=retracted,
    )


def annotator_report(
    db: Database, settings: ConsensusSettings, min_overlap: int = 2
) -> AnnotatorReport:
    """Read-only: every annotator's Dawid-Skene reliability and gold accuracy, pairwise
    Cohen's kappa (``min_overlap`` shared samples, else None) and Fleiss' kappa.

    Agreement statistics use confirm/correct votes only: a reject names no category.
    """
    with db.session() as s:
        snap = _load(s)
    if not snap.votes:
        return AnnotatorReport([], [], None, 0, 0, 0)
    result = dawid_skene(snap.votes, snap.classes, snap.gold, settings)
    ratings: dict[str, dict[str, str]] = {}
    for v in snap.votes:
        if not v.reject:
            ratings.setdefault(v.annotator, {})[v.item] = v.label
    multi = [labels for labels in ratings_by_item(ratings).values() if len(labels) >= 2]
    return AnnotatorReport(
        annotators=list(result.annotators.values()),
        pairwise_kappa=pairwise_kappa(ratings, min_overlap),
        fleiss_kappa=fleiss_kappa(multi),
        items_multi_rated=len(multi),
        samples=len({v.item for v in snap.votes}),
        votes=len(snap.votes),
    )
