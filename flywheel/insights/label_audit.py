"""Label-quality audit: which human-made labels look wrong (confident learning).

Confident learning (Northcutt, Jiang & Chuang 2021; the method behind cleanlab) reads
out-of-sample class probabilities next to the given labels:

1. per class k, a threshold t_k = the mean probability of k over the samples labeled k
   (the model's typical self-confidence for that class);
2. the confident joint C[given][true]: each sample counts once, under its given label and
   the class whose probability clears that class's threshold (the most probable one when
   several do); samples that clear none are not counted;
3. C is calibrated so each row sums to that class's label count and the whole to n;
4. prune by noise rate: for given class k and every other class j, the C[k][j] samples
   labeled k with the largest margin p_j - p_k are flagged; a sample whose given label is
   still the most probable one is never flagged.

This mirrors ``cleanlab.filter.find_label_issues(filter_by="prune_by_noise_rate")`` step for
step (``bench/bench_label_audit.py`` compares the two). The probabilities come from a
logistic regression on the newest cycle's embedding, fitted K-fold so that no sample is
judged by a model that saw its own label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sqlalchemy import select

from flywheel.db import Label, ReviewItem
from flywheel.db.labels import HUMAN_MADE_SOURCES, current_labels_query
from flywheel.db.models import ReviewReason, ReviewState
from flywheel.feedback.review import REVIEW_METHOD
from flywheel.learn.snapshots import latest_embeddings
from flywheel.workspace import Workspace

__all__ = [
    "AuditReport",
    "LabelIssue",
    "audit_labels",
    "confident_joint",
    "confident_thresholds",
    "find_label_issues",
    "out_of_sample_probs",
    "queue_audit_for_review",
    "rank_by_self_confidence",
    "self_confidence",
]

_EPS = 1e-6  # cleanlab's float comparison slack (FLOATING_POINT_COMPARISON)
_MISSING_CLASS_THRESHOLD = 2.0  # above any probability: a class nobody labeled counts no one


@dataclass(frozen=True)
class LabelIssue:
    sample_id: str
    given: str
    suggested: str  # the most probable class out of sample
    self_confidence: float  # out-of-sample probability of the given label
    suggested_prob: float
    source: str
    annotator: str | None
    label_id: int | None = None  # the audited label row: a reviewer's verdict sticks to it


@dataclass(frozen=True)
class AuditReport:
    issues: list[LabelIssue]  # worst first: lowest self-confidence
    checked: int  # labels audited
    classes: list[str]
    embedding: str
    cycle_id: int | None  # the cycle whose embeddings artifact was used


# --- out-of-sample probabilities -------------------------------------------------------------
def _fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold ids: each class dealt round-robin over the folds from a shuffled order,
    continuing where the previous class stopped so folds stay the same size."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        fold[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    return fold


def _fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int
) -> np.ndarray:
    out = np.zeros((len(x_test), num_classes), dtype=np.float64)
    present = np.unique(y_train)
    if len(present) == 1:  # nothing to tell apart: the one class seen is certain
        out[:, present[0]] = 1.0
        return out
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x_train), y_train)
    out[:, clf.classes_] = clf.predict_proba(scaler.transform(x_test))
    return out


def out_of_sample_probs(
    features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """(n, num_classes) probabilities, each row from a model that did not see that sample.

    Stratified K-fold logistic regression on standardised ``features`` (n, d). A class with
    fewer samples than folds is spread over as many folds as it has samples, so each of its
    samples is still judged by a model that saw the others. A class with a single sample
    cannot be judged out of sample at all (held out, the class does not exist): its row is
    the in-sample prediction, which keeps a lone label from being flagged for being alone.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if n == 0:
        return np.zeros((0, num_classes))
    if n < 2 or len(np.unique(y)) < 2:
        return np.eye(num_classes)[y]
    folds = max(2, min(folds, n))
    fold = _fold_of(y, folds, seed)
    probs = np.zeros((n, num_classes), dtype=np.float64)
    for f in range(folds):
        held = fold == f
        if held.any():
            probs[held] = _fit_predict(x[~held], y[~held], x[held], num_classes)
    lone = np.isin(y, np.flatnonzero(np.bincount(y, minlength=num_classes) == 1))
    if lone.any():
        probs[lone] = _fit_predict(x, y, x[lone], num_classes)
    return probs


# --- confident learning ----------------------------------------------------------------------
def _round_preserving_sum(values: np.ndarray) -> np.ndarray:
    """Round to integers whose sum is the rounded sum (cleanlab's ``round_preserving_sum``)."""
    ints = np.round(values)
    target = np.round(values.sum())
    while abs(ints.sum() - target) > _EPS:
        diff = target - ints.sum()
        step = 1 if diff > 0 else -1
        # Largest remainders go up, smallest come down.
        order = np.argsort(values - ints)[::-step][: min(int(abs(diff)), len(values))]
        ints[order] += step
    return ints.astype(np.int64)


def confident_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per class: the mean probability of that class over the samples labeled with it."""
    k = probs.shape[1]
    t = np.full(k, _MISSING_CLASS_THRESHOLD)
    for c in np.unique(labels):
        t[c] = probs[labels == c, c].mean()
    return np.clip(t, 2 * _EPS, None)


def confident_joint(probs: np.ndarray, labels: np.ndarray, calibrate: bool = True) -> np.ndarray:
    """(K, K) int counts C[given][true] of confidently counted samples, calibrated so row k
    sums to the number of samples labeled k (and the whole to n)."""
    k = probs.shape[1]
    above = probs >= confident_thresholds(probs, labels) - _EPS
    n_above = above.sum(axis=1)
    guess = np.where(n_above > 1, probs.argmax(axis=1), above.argmax(axis=1))
    counted = n_above > 0
    cj = np.zeros((k, k), dtype=np.int64)
    np.add.at(cj, (labels[counted], guess[counted]), 1)
    np.fill_diagonal(cj, np.maximum(cj.diagonal(), 1))  # every class keeps a correct sample
    if not calibrate:
        return cj
    counts = np.bincount(labels, minlength=k)
    # In cleanlab's memory layout and order of operations: the float sums then carry the
    # same last-bit noise, so a cell at exactly .5 rounds the same way (the tests and the
    # benchmark compare the two masks).
    cj_f = np.asfortranarray(cj)
    cal = (cj_f.T / np.maximum(cj_f.sum(axis=1), 1e-100) * counts).T
    cal = cal / max(np.sum(cal), 1e-100) * counts.sum()
    return np.stack([_round_preserving_sum(row) for row in cal])


def _prune_counts(cj: np.ndarray, min_per_class: int = 1) -> np.ndarray:
    """How many of each (given, true) cell to flag, leaving >= ``min_per_class`` per class.

    A class whose diagonal is raised to the minimum takes the difference evenly from its
    non-zero off-diagonal cells (truncated to whole samples, as cleanlab does).
    """
    cols = cj.T.astype(np.float64)  # column k: samples given label k, by true class
    diag = cols.diagonal().copy()
    raised = np.maximum(diag, min_per_class)
    spread = np.maximum(np.count_nonzero(cols, axis=0) - 1.0, 1.0)
    out = np.clip(cols - (raised - diag) / spread, 0, None)
    np.fill_diagonal(out, raised)
    return out.astype(np.int64).T  # back to [given][true]


def find_label_issues(probs: np.ndarray, labels: np.ndarray, min_per_class: int = 1) -> np.ndarray:
    """Bool mask (n,) of likely label errors: confident learning, pruned by noise rate.

    ``probs``: (n, K) out-of-sample probabilities; ``labels``: int (n,) given classes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    if len(labels) == 0:
        return mask
    prune = _prune_counts(confident_joint(probs, labels), min_per_class)
    for given in range(probs.shape[1]):
        rows = np.flatnonzero(labels == given)
        if len(rows) <= min_per_class:
            continue
        for true in range(probs.shape[1]):
            n_flag = prune[given, true]
            if true == given or n_flag <= 0:
                continue
            margin = probs[rows, true] - probs[rows, given]
            mask[rows[np.argsort(-margin)[:n_flag]]] = True
    # A sample whose given label is still the most probable one is not an issue.
    boosted = probs.copy()
    boosted[np.arange(len(labels)), labels] += _EPS
    mask[boosted.argmax(axis=1) == labels] = False
    return mask


def self_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The probability each sample's given label gets: low means suspect."""
    return np.asarray(probs)[np.arange(len(labels)), np.asarray(labels)]


def rank_by_self_confidence(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """Indices (of the ``mask`` rows, or all) sorted worst first: lowest self-confidence."""
    scores = self_confidence(probs, labels)
    idx = np.arange(len(labels)) if mask is None else np.flatnonzero(mask)
    return idx[np.argsort(scores[idx], kind="stable")]


# --- the workspace ---------------------------------------------------------------------------
def _current_labels(ws: Workspace, sources: tuple[str, ...]) -> list[Label]:
    with ws.db.session() as s:
        rows = list(s.scalars(current_labels_query(sources=sources)))
        s.expunge_all()
    return rows


def audit_labels(
    ws: Workspace,
    sources: tuple[str, ...] = HUMAN_MADE_SOURCES,
    folds: int = 5,
) -> AuditReport:
    """Audit the current labels of ``sources`` on the samples of the newest embeddings
    artifact (``cycles/<id>/embeddings.npz``). Read-only; an empty report (``checked=0``)
    without an artifact or with fewer than two classes."""
    snap = latest_embeddings(ws)
    if snap is None:
        return AuditReport([], 0, [], "", None)
    row_of = {str(sid): i for i, sid in enumerate(snap.ids)}
    labels = sorted(
        (lab for lab in _current_labels(ws, sources) if lab.sample_id in row_of),
        key=lambda lab: lab.sample_id,  # a stable order: the folds do not depend on the DB
    )
    classes = sorted({lab.label for lab in labels})
    if len(classes) < 2:
        return AuditReport([], 0, classes, snap.name, snap.cycle_id)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab.label] for lab in labels], dtype=np.int64)
    x = snap.vectors[[row_of[lab.sample_id] for lab in labels]]
    probs = out_of_sample_probs(x, y, len(classes), folds)
    flagged = find_label_issues(probs, y)
    issues = []
    for i in rank_by_self_confidence(probs, y, flagged):
        lab = labels[i]
        best = int(probs[i].argmax())
        issues.append(
            LabelIssue(
                sample_id=lab.sample_id,
                given=lab.label,
                suggested=classes[best],
                self_confidence=float(probs[i, y[i]]),
                suggested_prob=float(probs[i, best]),
                source=lab.source,
                annotator=lab.annotator,
                label_id=lab.id,
            )
        )
    return AuditReport(issues, len(labels), classes, snap.name, snap.cycle_id)


def _evidence(issue: LabelIssue, report: AuditReport) -> dict[str, Any]:
    return {
        "given": issue.given,
        "source": issue.source,
        "annotator": issue.annotator,
        "self_confidence": round(issue.self_confidence, 5),
        "suggested_prob": round(issue.suggested_prob, 5),
        "embedding": report.embedding,
        "embedding_cycle_id": report.cycle_id,
        "label_id": issue.label_id,
    }


def queue_audit_for_review(ws: Workspace, report: AuditReport) -> int:
    """Open a ``label_audit`` review item per issue; returns how many were opened.

    Skipped: samples with any open review item; labels a reviewer already ruled on (the
    current label was set by a review decision, or a reviewer rejected an audit item about
    this very label row): the same embedding would flag them again every run.
    """
    if not report.issues:
        return 0
    ids = [issue.sample_id for issue in report.issues]
    with ws.db.session() as s:
        busy = set(
            s.scalars(
                select(ReviewItem.sample_id).where(
                    ReviewItem.sample_id.in_(ids), ReviewItem.state == ReviewState.OPEN.value
                )
            )
        )
        ruled = {
            (r.evidence or {}).get("label_id")
            for r in s.scalars(
                select(ReviewItem).where(
                    ReviewItem.sample_id.in_(ids),
                    ReviewItem.reason == ReviewReason.LABEL_AUDIT.value,
                    ReviewItem.state == ReviewState.REJECTED.value,
                )
            )
        }
        label_ids = [i.label_id for i in report.issues if i.label_id is not None]
        reviewed = set(
            s.scalars(
                select(Label.id).where(Label.id.in_(label_ids), Label.method == REVIEW_METHOD)
            )
        )
        settled = (ruled | reviewed) - {None}
        opened = 0
        for issue in report.issues:
            if issue.sample_id in busy or issue.label_id in settled:
                continue
            s.add(
                ReviewItem(
                    sample_id=issue.sample_id,
                    # No cycle: (cycle_id, sample_id) is unique, and an audit may re-queue a
                    # sample after its earlier audit item was decided.
                    cycle_id=None,
                    reason=ReviewReason.LABEL_AUDIT.value,
                    proposed_label=issue.suggested,
                    score=float(issue.suggested_prob),
                    evidence=_evidence(issue, report),
                )
            )
            busy.add(issue.sample_id)
            opened += 1
    return opened
