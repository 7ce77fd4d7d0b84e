"""What every selection strategy returns: a decision per pool sample, with its evidence."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from flywheel.select.calibration import Calibration


class Decision(IntEnum):
    REJECTED = 0
    NEEDS_REVIEW = 1
    ACCEPTED = 2


@dataclass(frozen=True)
class SelectionResult:
    """Per-pool-sample decisions and evidence; n = pool size, k = labeled neighbours."""

    decision: np.ndarray  # (n,) int8 codes of :class:`Decision`
    label: np.ndarray  # (n,) int64 argmax of the combined distribution
    score: np.ndarray  # (n,) float32 combined mass of ``label``
    classifier_prob: np.ndarray  # (n,) float32 classifier probability of ``label``
    knn_share: np.ndarray  # (n,) float32 vote (or propagated) share of ``label``
    neighbor_ids: np.ndarray  # (n, k) int32 rows of the labeled set; -1 = none
    neighbor_sims: np.ndarray  # (n, k) float32 cosine similarities, descending
    capped: np.ndarray  # (n,) bool: passed the threshold, dropped by a class cap
    thresholds: np.ndarray  # (C,) float64 accept thresholds (+inf = none)
    review_thresholds: np.ndarray  # (C,) float64 lower edge of the review band
    accepted_per_class: np.ndarray  # (C,) int64
    calibration: Calibration
    counts: dict[str, int]  # pool, accepted, needs_review, rejected, capped
    # The review queue's order and why, where a strategy ranks it (select/review_queue.py):
    # (n,) int32 rank (0 = ask first; -1 = not queued), float32 benefit, reason per sample.
    review_rank: np.ndarray | None = None
    review_benefit: np.ndarray | None = None
    review_reason: dict[int, str] | None = None
