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
    # (n, k), or (r, k) for the rows in ``neighbor_rows``: the labeled set's rows (-1 = none)
    # and their cosine similarities, descending.
    neighbor_ids: np.ndarray  # int32
    neighbor_sims: np.ndarray  # float32
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
    # (r,) sorted pool positions whose neighbours the arrays above hold; None: every sample.
    # Only the rows a cycle writes show their neighbours, so a strategy may keep just those.
    neighbor_rows: np.ndarray | None = None

    def neighbours_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sims) of pool sample ``i``'s labeled neighbours; empty where not kept."""
        at = i
        if self.neighbor_rows is not None:
            at = int(np.searchsorted(self.neighbor_rows, i))
            if at >= len(self.neighbor_rows) or self.neighbor_rows[at] != i:
                return self.neighbor_ids[:0], self.neighbor_sims[:0]
        return self.neighbor_ids[at], self.neighbor_sims[at]
