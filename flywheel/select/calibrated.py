"""Pseudo-label selection: classifier probability + vote of the k nearest labeled samples.

For each pool sample the classifier's class distribution is combined (weighted product by
default, or mean) with ``knn``: the similarity-weighted vote of its k nearest labeled
neighbours (cosine, FAISS) or, with ``propagation``, label spreading over a kNN graph of all
samples (Zhou et al. 2004, as used for deep SSL by Iscen et al. 2019). The label is the
argmax and the score its mass. A sample is accepted when its score reaches its class's threshold
from :func:`calibrate_thresholds`, computed on labeled data that neither the classifier nor the
vote saw: a separate calibration set, or the labeled set itself (leave-one-out for the vote,
cross-fitted folds for propagation, out-of-fold classifier probabilities from the caller).
Samples just below a threshold go to human review; per-class caps keep the accepted set
close to the labeled class mix, so the wheel does not amplify its own bias.

Threshold calibration (:func:`calibrate_thresholds`) lives in :mod:`flywheel.select.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import faiss
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from flywheel.config import LearningSettings
from flywheel.errors import InvalidInputError
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.learn.index import IndexKind, build_index, check_embeddings, search
from flywheel.learn.sample_rows import NO_LABEL
from flywheel.select.calibration import Calibration, _check_labels, calibrate_thresholds
from flywheel.select.outcome import (
    POOL_CHUNK,
    SelectionOutcome,
    full_probs,
    pseudo_anchors,
    selection_classifier,
)
from flywheel.select.propagation import drop_self, propagated_votes
from flywheel.select.result import Decision, SelectionResult
from flywheel.select.review_queue import rank_for_review, review_uncertainty
from flywheel.select.strategies import SelectionInputs

__all__ = [
    "Calibration",
    "Decision",
    "SelectionConfig",
    "SelectionResult",
    "calibrate_thresholds",
    "combine",
    "knn_vote",
    "select_pseudo_labels",
]


# Held-out evidence needs a label to hold out and one to learn from, in every class: with
# fewer, nothing can be certified (and the pool teacher takes over, flywheel.select.teacher).
MIN_LABELS_TO_HOLD_OUT = 2


@dataclass(frozen=True)
class SelectionConfig:
    k: int = 10  # labeled neighbours voting per pool sample
    target_precision: float = 0.99
    classifier_weight: float = 0.5  # weight of classifier probs vs the kNN vote, in [0, 1]
    # "product": p ∝ clf**w * knn**(1-w) (independent experts: agreement sharpens the score,
    # which ranks pool samples better on digits); "mean": w * clf + (1 - w) * knn.
    combination: Literal["product", "mean"] = "product"
    similarity_power: float = 3.0  # neighbour vote weight = max(cosine, 0) ** power
    review_band: float = 0.15  # scores in [threshold - band, threshold) go to review
    max_review: int | None = None  # keep only the highest-scored review samples
    max_per_class: int | None = None  # absolute cap on accepted samples per class
    # A class may take at most ratio * (its labeled share) of the accepted total.
    max_class_ratio: float | None = 2.0
    propagation: bool = False
    propagation_k: int = 10
    propagation_alpha: float = 0.99
    propagation_iters: int = 20  # conjugate-gradient steps per class
    propagation_folds: int = 5  # cross-fitting folds when calibrating on the labeled set
    index_kind: IndexKind = "flat"  # index over the labeled set
    graph_index_kind: IndexKind = "flat"  # index over all samples, for propagation
    index_options: dict[str, int] = field(default_factory=dict)  # nlist, nprobe, hnsw_m ...
    # A class accepts pseudo-labels only with this many held-out predictions of it: with
    # fewer there is no evidence of that class's precision, whatever the shared fit says.
    min_class_evidence: int = 3
    # And the shared score-to-precision fit needs this many held-out predictions in all: on
    # faces, 10 (all correct) let it extrapolate to 99 % for labels that were 95 % precise
    # (BENCHMARKS §17); the bootstrap cannot show the uncertainty of so few.
    min_total_evidence: int = 20
    confidence: float = 0.9  # level of the bootstrap lower band on P(correct | score)
    n_bootstrap: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "k >= 1": self.k >= 1,
            "0.5 < target_precision < 1": 0.5 < self.target_precision < 1,
            "0 <= classifier_weight <= 1": 0 <= self.classifier_weight <= 1,
            "review_band >= 0": self.review_band >= 0,
            "combination in (product, mean)": self.combination in ("product", "mean"),
            "max_class_ratio >= 1": self.max_class_ratio is None or self.max_class_ratio >= 1,
            "0 < propagation_alpha < 1": 0 < self.propagation_alpha < 1,
            "propagation_folds >= 2": self.propagation_folds >= 2,
            "0 < confidence < 1": 0 < self.confidence < 1,
            "n_bootstrap >= 1": self.n_bootstrap >= 1,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise InvalidInputError(f"invalid SelectionConfig: need {', '.join(failed)}")


def _check_probs(probs: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    if not isinstance(probs, np.ndarray) or probs.shape != (n, num_classes):
        shape = getattr(probs, "shape", None)
        raise InvalidInputError(f"{name} must have shape ({n}, {num_classes}), got {shape}")
    if not np.issubdtype(probs.dtype, np.floating) or not np.isfinite(probs).all():
        raise InvalidInputError(f"{name} must be finite floats, got dtype {probs.dtype}")
    if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise InvalidInputError(f"{name} rows must be probability distributions (sum to 1)")
    return probs.astype(np.float32, copy=False)


def knn_vote(
    sims: np.ndarray, ids: np.ndarray, labels: np.ndarray, num_classes: int, power: float = 3.0
) -> np.ndarray:
    """Similarity-weighted class vote: (n, k) sims/ids into ``labels`` -> (n, C) float32.

    Weight = max(sim, 0) ** power (sharper than a plain count, Iscen et al. 2019); rows with
    no positive-weight neighbour get the uniform distribution.
    """
    n = ids.shape[0]
    weights = np.where(ids >= 0, np.clip(sims, 0, None), 0.0) ** power
    votes = np.zeros((n, num_classes), dtype=np.float64)
    rows = np.arange(n)
    for j in range(ids.shape[1]):
        np.add.at(votes, (rows, labels[np.maximum(ids[:, j], 0)]), weights[:, j])
    total = votes.sum(axis=1, keepdims=True)
    return np.where(total > 0, votes / np.maximum(total, 1e-30), 1.0 / num_classes).astype(
        np.float32
    )


def combine(clf: np.ndarray, vote: np.ndarray, weight: float, how: str = "product") -> np.ndarray:
    """Combine (n, C) classifier and vote distributions into one (n, C) float32 distribution."""
    if how == "mean":
        return (weight * clf + (1 - weight) * vote).astype(np.float32)
    # Floor both so one expert's hard zero (no neighbour of that class) is a veto, not a NaN.
    log_p = weight * np.log(np.clip(clf, 1e-4, 1)) + (1 - weight) * np.log(np.clip(vote, 1e-4, 1))
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _apply_caps(accepted, label, score, labeled_labels, c, cfg) -> np.ndarray:
    """Mask of accepted samples dropped by the class caps (lowest scores go first)."""
    counts = np.bincount(label[accepted], minlength=c)
    caps = np.full(c, np.iinfo(np.int64).max)
    if cfg.max_class_ratio is not None:
        # Share of each class in the labeled set, smoothed so a rare class is not capped at 0.
        share = (np.bincount(labeled_labels, minlength=c) + 1) / (len(labeled_labels) + c)
        caps = np.ceil(cfg.max_class_ratio * share * counts.sum()).astype(np.int64)
    if cfg.max_per_class is not None:
        caps = np.minimum(caps, cfg.max_per_class)
    capped = np.zeros(len(label), dtype=bool)
    for cls in np.flatnonzero(counts > caps):
        members = np.flatnonzero(accepted & (label == cls))
        capped[members[np.argsort(-score[members], kind="stable")[caps[cls] :]]] = True
    return capped


def select_pseudo_labels(
    pool_embeddings: np.ndarray,
    pool_probs: np.ndarray,
    labeled_embeddings: np.ndarray,
    labeled_labels: np.ndarray,
    calib_embeddings: np.ndarray | None,
    calib_probs: np.ndarray,
    calib_labels: np.ndarray | None,
    num_classes: int,
    config: SelectionConfig | None = None,
    keep_neighbours: bool = True,
    index: faiss.Index | None = None,
) -> SelectionResult:
    """Decide accept / review / reject, with a label and evidence, for every pool sample.
    ``keep_neighbours=False``: the labeled neighbours are used for the votes, not kept (the
    caller adds them for the rows it writes: :func:`with_neighbours`). ``index``: the
    caller's ``build_index`` of ``labeled_embeddings`` with ``config``'s kind, built once
    for both.

    ``pool_embeddings`` (n, d) and ``labeled_embeddings`` (m, d) floating (normalised here);
    ``pool_probs`` (n, C) classifier probabilities; ``labeled_labels`` (m,) int.
    Calibration: ``calib_embeddings`` (q, d), ``calib_probs`` (q, C), ``calib_labels`` (q,)
    held out from the classifier and the labeled set; or ``calib_embeddings`` and
    ``calib_labels`` None and ``calib_probs`` (m, C) *out-of-fold* classifier probabilities
    for the labeled set (e.g. cross_val_predict), which is then scored leave-one-out.
    """
    cfg = config or SelectionConfig()
    c = num_classes
    check_embeddings(pool_embeddings, "pool_embeddings")
    d = pool_embeddings.shape[1]
    check_embeddings(labeled_embeddings, "labeled_embeddings", dim=d)
    n, m = len(pool_embeddings), len(labeled_embeddings)
    labeled_labels = np.asarray(labeled_labels)
    if labeled_labels.shape != (m,):
        raise InvalidInputError(
            f"labeled_labels must have shape ({m},), got {labeled_labels.shape}"
        )
    _check_labels(labeled_labels, c, "labeled_labels")
    pool_probs = _check_probs(pool_probs, n, c, "pool_probs")
    if (calib_embeddings is None) != (calib_labels is None):
        raise InvalidInputError("give calib_embeddings and calib_labels together, or neither")
    if calib_embeddings is not None:
        check_embeddings(calib_embeddings, "calib_embeddings", dim=d)
        calib_labels = np.asarray(calib_labels)
        if calib_labels.shape != (len(calib_embeddings),):
            raise InvalidInputError("calib_labels must have one label per calib_embeddings row")
        _check_labels(calib_labels, c, "calib_labels")
    else:
        calib_labels = labeled_labels
    calib_probs = _check_probs(calib_probs, len(calib_labels), c, "calib_probs")

    if index is None:
        index = build_index(labeled_embeddings, cfg.index_kind, **cfg.index_options)
    if calib_embeddings is not None:
        c_sims, c_ids = search(index, calib_embeddings, cfg.k)
    else:  # leave-one-out: a labeled sample must not vote for itself
        c_sims, c_ids = drop_self(*search(index, labeled_embeddings, cfg.k + 1))
    if cfg.propagation:
        parts = [labeled_embeddings, pool_embeddings]
        calib_rows = None
        if calib_embeddings is not None:
            parts.insert(1, calib_embeddings)
            calib_rows = np.arange(m, m + len(calib_embeddings))
        full, calib_vote = propagated_votes(
            np.concatenate(parts), m, labeled_labels, calib_rows, cfg, c
        )
        pool_vote = full[-n:]
    else:
        pool_vote = None
        calib_vote = knn_vote(c_sims, c_ids, labeled_labels, c, cfg.similarity_power)

    # The pool chunk by chunk: per sample only its label and shares are kept, and its
    # neighbours when asked (int32 rows: 40 B a sample less).
    k = min(cfg.k, m)
    kept = n if keep_neighbours else 0
    sims, ids = np.empty((kept, k), dtype=np.float32), np.empty((kept, k), dtype=np.int32)
    label, score = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)
    knn_share = np.empty(n, dtype=np.float32)
    for start in range(0, n, POOL_CHUNK):
        rows = slice(start, min(start + POOL_CHUNK, n))
        chunk_sims, chunk_ids = search(index, pool_embeddings[rows], cfg.k)
        if keep_neighbours:
            sims[rows], ids[rows] = chunk_sims, chunk_ids
        if pool_vote is None:
            vote = knn_vote(chunk_sims, chunk_ids, labeled_labels, c, cfg.similarity_power)
        else:
            vote = pool_vote[rows]
        combined = combine(pool_probs[rows], vote, cfg.classifier_weight, cfg.combination)
        at = np.arange(len(combined))
        label[rows] = combined.argmax(axis=1)
        score[rows] = combined[at, label[rows]]
        knn_share[rows] = vote[at, label[rows]]
    calib_combined = combine(calib_probs, calib_vote, cfg.classifier_weight, cfg.combination)
    calib_pred = calib_combined.argmax(axis=1)
    calibration = calibrate_thresholds(
        calib_combined[np.arange(len(calib_pred)), calib_pred],
        calib_pred,
        calib_pred == calib_labels,
        c,
        cfg.target_precision,
        pool_scores=score,
        pool_predicted=label,
        confidence=cfg.confidence,
        n_bootstrap=cfg.n_bootstrap,
        seed=cfg.seed,
    )
    enough = calibration.n_calibration >= cfg.min_class_evidence
    enough &= len(calib_labels) >= cfg.min_total_evidence
    thresholds = np.where(enough, calibration.thresholds, np.inf)
    # A class that cannot reach the target still sends its most confident samples to review.
    review_thresholds = np.minimum(thresholds, 1.0) - cfg.review_band
    passed = score >= thresholds[label]
    capped = _apply_caps(passed, label, score, labeled_labels, c, cfg)
    accepted = passed & ~capped
    review = ~passed & (score >= review_thresholds[label])
    if cfg.max_review is not None and review.sum() > cfg.max_review:
        members = np.flatnonzero(review)
        review[members[np.argsort(-score[members], kind="stable")[cfg.max_review :]]] = False
    decision = np.full(n, Decision.REJECTED, dtype=np.int8)
    decision[review] = Decision.NEEDS_REVIEW
    decision[accepted] = Decision.ACCEPTED
    counts = {
        "pool": n,
        "accepted": int(accepted.sum()),
        "needs_review": int(review.sum()),
        "rejected": int(n - accepted.sum() - review.sum()),
        "capped": int(capped.sum()),
    }
    return SelectionResult(
        decision=decision,
        label=label,
        score=score,
        classifier_prob=pool_probs[np.arange(n), label],
        knn_share=knn_share,
        neighbor_ids=ids,
        neighbor_sims=sims,
        capped=capped,
        thresholds=thresholds,
        review_thresholds=review_thresholds,
        accepted_per_class=np.bincount(label[accepted], minlength=c).astype(np.int64),
        calibration=calibration,
        counts=counts,
        neighbor_rows=None if keep_neighbours else np.zeros(0, dtype=np.int64),
    )


def with_neighbours(
    result: SelectionResult, rows: np.ndarray, index: faiss.Index, pool: np.ndarray, k: int
) -> SelectionResult:
    """``result`` with the ``k`` labeled neighbours (in ``index``) of the pool ``rows``
    (sorted positions) as its evidence: a million pool samples' neighbours are not kept
    when only the rows written as labels or review items show them."""
    width = min(k, index.ntotal)
    sims = np.empty((len(rows), width), dtype=np.float32)
    ids = np.empty((len(rows), width), dtype=np.int32)
    for start in range(0, len(rows), POOL_CHUNK):
        part = rows[start : start + POOL_CHUNK]
        sims[start : start + len(part)], ids[start : start + len(part)] = search(
            index, pool[part], k
        )
    return replace(result, neighbor_ids=ids, neighbor_sims=sims, neighbor_rows=rows)


# The models whose pool probabilities ``select`` asks for (flywheel.select.strategies).
MODEL_OPINIONS = ("champion",)


def select(inputs: SelectionInputs) -> SelectionOutcome:
    """The ``calibrated`` strategy: pseudo-labels for the pool from the chosen embedding.

    The classifier side is a logistic regression on the embedding, so its out-of-fold
    probabilities on the human labels (seed labels, review answers, feedback: every
    human-made label, as it arrives) are cheap and honest calibration data. So the share
    accepted follows measured confidence, and grows as the labels and earlier pseudo-labels
    make the classifier better. The champion CNN (``champion_probs``, (n_pool, C)) was
    trained on those labels, so it cannot be calibrated on them; it is a second opinion
    instead: a sample whose label it disputes is not accepted but offered for review.
    The review queue (:mod:`flywheel.select.review_queue`) holds the band below each class's
    threshold and the disputed samples, ranked by uncertainty times embedding coverage.
    """
    data, choice, learning = inputs.data, inputs.choice, inputs.learning
    labels = data.labeled.labels
    # Pseudo-labels the wheel already accepted teach the classifier too (weighted by their
    # confidence); calibration still scores only human labels, each by a model that never
    # saw it.
    pseudo_x, pseudo_y, pseudo_w, _ = pseudo_anchors(data, choice)

    def fit(rows: np.ndarray) -> LogisticRegression:
        x = np.concatenate([choice.labeled[rows], pseudo_x])
        y = np.concatenate([labels[rows], pseudo_y])
        w = np.concatenate([np.ones(len(rows)), pseudo_w])
        return selection_classifier().fit(x, y, sample_weight=w)

    clf = fit(np.arange(len(labels)))
    pool_probs = full_probs(clf, choice.pool, data.num_classes)
    min_count = int(np.bincount(labels, minlength=data.num_classes).min())
    cfg = SelectionConfig(
        k=learning.k,
        target_precision=learning.target_precision,
        seed=learning.seed,
        index_kind=learning.index_kind,
    )
    if min_count >= MIN_LABELS_TO_HOLD_OUT:
        folds = StratifiedKFold(min(5, min_count), shuffle=True, random_state=learning.seed)
        calib = np.zeros((len(labels), data.num_classes))
        for train_rows, held_out in folds.split(choice.labeled, labels):
            calib[held_out] = full_probs(
                fit(train_rows), choice.labeled[held_out], data.num_classes
            )
        how = f"{folds.n_splits}-fold out-of-fold on {len(labels)} human labels"
        if len(labels) < cfg.min_total_evidence:
            how += f" (fewer than {cfg.min_total_evidence}: nothing accepted until reviews add)"
    else:
        # One label in some class: nothing is held out, so no class has evidence of its
        # precision. The in-sample fit still ranks the review queue; nothing is accepted.
        calib = full_probs(clf, choice.labeled, data.num_classes)
        cfg = replace(cfg, min_class_evidence=len(labels) + 1)
        how = "no held-out evidence (a class has a single human label): nothing accepted"
    if len(pseudo_y):
        how += f"; classifier also trained on {len(pseudo_y)} earlier pseudo-labels"
    # The labeled set's index: the votes' neighbours, the written rows' evidence, and the
    # anchors kept with the cycle's run.
    anchors = build_index(choice.labeled, cfg.index_kind, **cfg.index_options)
    result = select_pseudo_labels(
        choice.pool,
        pool_probs,
        choice.labeled,
        labels,
        None,
        calib,
        None,
        data.num_classes,
        cfg,
        keep_neighbours=False,
        index=anchors,
    )
    del pool_probs  # pool-sized: freed before the champion's opinion is read
    champion_probs = inputs.champion_probs()
    if champion_probs is not None:
        named = champion_probs.argmax(1)
        disputed = named != result.label
        other = np.take_along_axis(champion_probs, named[:, None], axis=1)[:, 0]
        del champion_probs, named  # pool-sized: only the dispute and its score are kept
        how += "; champion agreement required"
    else:
        disputed, other = np.zeros(len(result.label), dtype=bool), None
    result = with_review_queue(result, disputed, other, choice, cfg.review_band, learning)
    # Evidence for the rows the cycle writes: labels, retractions and review items.
    written = (result.decision != Decision.REJECTED) | (data.pool_current.code != NO_LABEL)
    result = with_neighbours(result, np.flatnonzero(written), anchors, choice.pool, cfg.k)
    return SelectionOutcome(result, data.labeled.ids, choice.name, how, anchors)


def with_review_queue(
    result: SelectionResult,
    disputed: np.ndarray,
    other_score: np.ndarray | None,
    choice: EmbeddingChoice,
    band: float,
    learning: LearningSettings,
) -> SelectionResult:
    """``result`` with disputed samples not accepted, and the review queue re-picked: the
    band below each threshold and the disputed samples, by expected benefit."""
    decision = result.decision.copy()
    disputed_accepted = disputed & (decision == Decision.ACCEPTED)
    decision[disputed_accepted] = Decision.REJECTED
    open_ = decision != Decision.ACCEPTED
    uncertainty = review_uncertainty(
        result.score.astype(np.float64),
        result.thresholds,
        result.label,
        band,
        disputed=disputed if other_score is not None else None,
        other_score=other_score,
    )
    decision[decision == Decision.NEEDS_REVIEW] = Decision.REJECTED
    pick = rank_for_review(
        open_, uncertainty, disputed & open_, choice.pool, choice.labeled, learning.max_review
    )
    decision[pick.order] = Decision.NEEDS_REVIEW
    counts = dict(result.counts)
    counts["accepted"] = int((decision == Decision.ACCEPTED).sum())
    counts["needs_review"] = int((decision == Decision.NEEDS_REVIEW).sum())
    counts["rejected"] = int((decision == Decision.REJECTED).sum())
    counts["disputed_by_champion"] = int(disputed_accepted.sum())
    counts["review_disputed"] = sum(r == "disputed" for r in pick.reason)
    accepted = decision == Decision.ACCEPTED
    per_class = np.bincount(result.label[accepted], minlength=len(result.thresholds))
    rank = np.full(len(decision), -1, dtype=np.int32)
    rank[pick.order] = np.arange(len(pick.order))
    benefit = np.zeros(len(decision), dtype=np.float32)
    benefit[pick.order] = pick.benefit
    return replace(
        result,
        decision=decision,
        counts=counts,
        accepted_per_class=per_class,
        review_rank=rank,
        review_benefit=benefit,
        review_reason={int(i): r for i, r in zip(pick.order, pick.reason, strict=True)},
    )
