"""What a cycle's selection produced, with the evidence each label carries, and the
shared pieces the strategies use (pseudo-label anchors, the embedding's own classifier)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
from sklearn.linear_model import LogisticRegression

from flywheel.learn.data import CycleData
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.select.result import Decision, SelectionResult

# Pool rows scored at a time: the (rows, classes) intermediates of a million-row pool would
# otherwise all be alive at once (the select step's memory peak, BENCHMARKS §24).
POOL_CHUNK = 65_536


@dataclass
class SelectionOutcome:
    result: SelectionResult
    reference_ids: list[str]  # what result.neighbor_ids index into
    embedding: str
    calibration: str  # how the thresholds were calibrated
    index: faiss.Index | None = None  # the anchors' FAISS index, kept with the cycle's run
    # Earlier selecting cycles the strategy counted (its schedule's position); 0: none used.
    selection_round: int = 0
    # Set by the cycle: the embedding store key of the vectors selected with, and the model
    # whose probabilities scored the pool (None: no model's opinion was used).
    embedding_fingerprint: str | None = None
    model_version: str | None = None

    def evidence(self, i: int) -> dict[str, Any]:
        """Provenance of pool sample ``i``'s decision, small enough for a JSON column."""
        r = self.result
        neighbours = [
            [self.reference_ids[j], round(float(s), 4)]
            for j, s in zip(*r.neighbours_of(i), strict=True)
            if j >= 0
        ]
        review = {}
        if r.review_rank is not None and r.review_rank[i] >= 0:
            review = {
                "review": {
                    "rank": int(r.review_rank[i]),
                    "benefit": round(float(r.review_benefit[i]), 5),  # type: ignore[index]
                    "why": (r.review_reason or {}).get(i, "near_threshold"),
                }
            }
        return {
            **review,
            "decision": Decision(int(r.decision[i])).name.lower(),
            "score": round(float(r.score[i]), 5),
            "classifier_prob": round(float(r.classifier_prob[i]), 5),
            "knn_share": round(float(r.knn_share[i]), 5),
            "threshold": _finite(float(r.thresholds[int(r.label[i])])),
            "neighbors": neighbours,
            "embedding": self.embedding,
            "embedding_fingerprint": self.embedding_fingerprint,
            "model_version": self.model_version,
            "calibration": self.calibration,
        }


def _finite(x: float) -> float | None:
    """JSON has no infinity: a class that accepts nothing has no threshold."""
    return x if np.isfinite(x) else None


def selection_classifier() -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=2000)


def pseudo_anchors(
    data: CycleData, choice: EmbeddingChoice
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Pool samples whose current label is a pseudo-label: embeddings, classes, weights, ids."""
    current = data.pool_current
    has = current.in_classes(data.num_classes)  # a class no longer learned anchors nothing
    ids = [data.pool_ids[i] for i in np.flatnonzero(has)]
    labels = current.code[has].astype(np.int64)
    weights = current.confidence[has].astype(np.float64)
    return choice.pool[has], labels, weights, ids


def embedding_classifier_probs(data: CycleData, choice: EmbeddingChoice) -> np.ndarray:
    """(n_pool, C) probabilities of a logistic regression on the embedding: the classifier
    opinion when no trained model exists yet."""
    clf = selection_classifier().fit(choice.labeled, data.labeled.labels)
    return full_probs(clf, choice.pool, data.num_classes)


def full_probs(clf: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (len(x), num_classes) probabilities (0 for a class ``clf`` never saw),
    ``POOL_CHUNK`` rows at a time."""
    out = np.zeros((len(x), num_classes), dtype=np.float32)
    for start in range(0, len(x), POOL_CHUNK):
        rows = slice(start, start + POOL_CHUNK)
        out[rows, clf.classes_] = clf.predict_proba(x[rows])
    return out


def pseudo_label_quality(data: CycleData, result: SelectionResult) -> dict[str, float | None]:
    """Precision of accepted pseudo-labels against the hidden truth, and pool coverage."""
    accepted = result.decision == Decision.ACCEPTED
    known = accepted & (data.pool_truth >= 0)
    n_pool = len(data.pool_ids)
    return {
        "pseudo_precision": float((result.label[known] == data.pool_truth[known]).mean())
        if known.any()
        else None,
        "pseudo_coverage": float(accepted.sum() / n_pool) if n_pool else None,
    }
