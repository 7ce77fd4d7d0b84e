"""Pseudo-labels by model / neighbour agreement, on a growing class-balanced schedule.

The measured default (bench/LEARNING_NOTES.md). A pool sample qualifies when the newest
classifier and the vote of its k nearest *anchors* (human labels plus pseudo-labels already
accepted, weighted by their confidence, ``exp((cos - 1) / tau)`` so that one label per
class still breaks ties) name the same class; its confidence is the geometric mean of the
two probabilities. Per class, the most confident qualifying samples are accepted up to an
equal quota of ``share`` of the pool, and ``share`` grows cycle by cycle: early cycles take
only the easiest samples, later ones reach into harder regions once the model has improved
on the easy ones. Equal quotas keep the wheel from amplifying the classes it already knows.
Qualifying samples over quota and disputed samples with the highest confidence go to review.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from flywheel.errors import InvalidInputError
from flywheel.learn.index import IndexKind, build_index, search
from flywheel.select.outcome import SelectionOutcome, embedding_classifier_probs, pseudo_anchors
from flywheel.select.result import Decision, SelectionResult
from flywheel.select.strategies import SelectionInputs


@dataclass(frozen=True)
class AgreementConfig:
    k: int = 10
    tau: float = 0.1  # temperature of the neighbour weights
    share: float = 0.5  # per-class quota as a fraction of pool / num_classes
    max_review: int = 200
    # "flat" (exact) by default; "ivf" / "hnsw" for anchor sets in the millions.
    index_kind: IndexKind = "flat"


def share_for_round(round_: int, start: float, end: float, steps: int) -> float:
    """Quota share for the ``round_``-th selecting cycle (0-based): start ... end in steps."""
    if steps <= 1:
        return end
    return float(min(end, start + (end - start) * round_ / (steps - 1)))


def select_by_agreement(
    pool_embeddings: np.ndarray,
    pool_probs: np.ndarray,
    anchor_embeddings: np.ndarray,
    anchor_labels: np.ndarray,
    anchor_weights: np.ndarray,
    num_classes: int,
    config: AgreementConfig,
    index: faiss.Index | None = None,
) -> SelectionResult:
    """``pool_embeddings`` (n, d), ``anchor_embeddings`` (m, d) unit float32;
    ``pool_probs`` (n, C); ``anchor_labels`` int (m,); ``anchor_weights`` float (m,) > 0.

    Returns a ``SelectionResult`` whose ``neighbor_ids`` index the anchors and whose
    ``thresholds`` are the per-class confidence of the last accepted sample (the effective
    cut-off; +inf where a class accepted nothing). ``calibration`` is None: this strategy
    controls coverage, and its precision is measured, not certified. ``index``: a prebuilt
    index over the anchors (e.g. to keep with the cycle's artifacts); built here if None.
    """
    n, m = len(pool_embeddings), len(anchor_embeddings)
    if pool_probs.shape != (n, num_classes):
        raise InvalidInputError(f"pool_probs must be ({n}, {num_classes})")
    if anchor_labels.shape != (m,) or anchor_weights.shape != (m,) or m == 0:
        raise InvalidInputError("need at least one anchor, with one label and weight each")
    k = min(config.k, m)
    if index is None:
        index = build_index(anchor_embeddings, config.index_kind)
    sims, ids = search(index, pool_embeddings, k)
    weights = anchor_weights[ids] * np.exp((sims - 1.0) / config.tau)
    votes = np.zeros((n, num_classes))
    np.add.at(votes, (np.repeat(np.arange(n), k), anchor_labels[ids].ravel()), weights.ravel())
    votes /= np.maximum(votes.sum(1, keepdims=True), 1e-30)

    pred = pool_probs.argmax(1)
    rows = np.arange(n)
    clf_prob = pool_probs[rows, pred]
    knn_share = votes[rows, pred]
    conf = np.sqrt(clf_prob * knn_share)
    agree = pred == votes.argmax(1)

    decision = np.full(n, Decision.REJECTED, dtype=np.int8)
    thresholds = np.full(num_classes, np.inf)
    quota = round(config.share * n / num_classes)
    for c in range(num_classes):
        cand = np.flatnonzero(agree & (pred == c))
        ranked = cand[np.argsort(-conf[cand], kind="stable")]
        take = ranked[:quota]
        decision[take] = Decision.ACCEPTED
        if len(take):
            thresholds[c] = float(conf[take[-1]])
    # Review: what almost made it (over quota) or what the two opinions disagree on,
    # most confident first: a human answer there moves the most samples next cycle.
    open_ = np.flatnonzero(decision != Decision.ACCEPTED)
    review = open_[np.argsort(-conf[open_], kind="stable")[: config.max_review]]
    decision[review] = Decision.NEEDS_REVIEW
    accepted_per_class = np.bincount(pred[decision == Decision.ACCEPTED], minlength=num_classes)
    counts = {
        "pool": n,
        "accepted": int((decision == Decision.ACCEPTED).sum()),
        "needs_review": int((decision == Decision.NEEDS_REVIEW).sum()),
        "rejected": int((decision == Decision.REJECTED).sum()),
        "capped": int((agree & (decision != Decision.ACCEPTED)).sum()),
    }
    return SelectionResult(
        decision=decision,
        label=pred.astype(np.int64),
        score=conf.astype(np.float32),
        classifier_prob=clf_prob.astype(np.float32),
        knn_share=knn_share.astype(np.float32),
        neighbor_ids=ids.astype(np.int32),
        neighbor_sims=sims.astype(np.float32),
        capped=agree & (decision != Decision.ACCEPTED),
        thresholds=thresholds,
        review_thresholds=np.zeros(num_classes),
        accepted_per_class=accepted_per_class.astype(np.int64),
        calibration=None,  # type: ignore[arg-type]
        counts=counts,
    )


# The models whose pool probabilities ``select`` asks for (flywheel.select.strategies).
MODEL_OPINIONS = ("latest",)


def select(inputs: SelectionInputs) -> SelectionOutcome:
    """The ``agreement`` strategy for a cycle. The newest model, promoted or not, is the
    best opinion on the pool: it was trained on the most labels (the gate still decides
    what is served). Before any model predicts these classes, a logistic regression on the
    embedding gives the classifier's side."""
    data, choice, learning = inputs.data, inputs.choice, inputs.learning
    model_probs = inputs.latest_probs()
    if model_probs is None:
        model_probs = embedding_classifier_probs(data, choice)
    round_ = inputs.finished_rounds()
    px, py, pw, pids = pseudo_anchors(data, choice)
    share = share_for_round(round_, learning.share_start, learning.share_end, learning.share_steps)
    anchors = np.concatenate([choice.labeled, px])
    index = build_index(anchors, learning.index_kind)
    result = select_by_agreement(
        choice.pool,
        model_probs,
        anchors,
        np.concatenate([data.labeled.labels, py]),
        np.concatenate([np.ones(len(data.labeled.labels)), np.maximum(pw, 1e-3)]),
        data.num_classes,
        AgreementConfig(
            k=learning.k, tau=learning.tau, share=share, max_review=learning.max_review
        ),
        index=index,
    )
    how = f"agreement, class quota {share:.0%} of the pool, {len(pids)} pseudo anchors"
    return SelectionOutcome(result, data.labeled.ids + pids, choice.name, how, index, round_)
