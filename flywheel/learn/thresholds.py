"""Class-adaptive confidence thresholds for the consistency term on the unlabeled pool.

FixMatch keeps a weak view's prediction as the target for a strong view only above one fixed
confidence (0.95). Early in training, and for hard classes, almost nothing passes, so the
pool teaches little; classes the model already knows take the whole signal. Two remedies from
the literature, behind one interface (``mask(probs, indices)`` per unlabeled batch):

- ``flexmatch`` (Zhang et al. 2021): a class's threshold scales with its *learning effect*,
  the number of pool samples currently predicted as it above the fixed threshold,
  normalised by the best-learned class (or by the still-unused samples while most are
  unused: warm-up), through the convex map x / (2 - x).
- ``freematch`` (Wang et al. 2023): a global threshold that tracks the model's mean
  confidence (an EMA), scaled per class by the EMA of the mean class probability relative to
  its largest class.

``fixed`` is plain FixMatch. All are stateful per training run and see only the model's own
predictions: no labels. A run that continues from a trained model (the champion) first
``prime``s the state with that model's predictions on the pool: started from nothing, both
adaptive rules would take every prediction as a target for the first hundreds of steps, which
for a model that is already confident is plain self-training on its own mistakes.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

ThresholdMode = Literal["fixed", "flexmatch", "freematch"]
THRESHOLD_MODES: tuple[str, ...] = get_args(ThresholdMode)  # the names, said once


class ConsistencyThresholds:
    """Per-batch masks of which unlabeled predictions are confident enough to train on."""

    def __init__(
        self,
        mode: ThresholdMode,
        num_classes: int,
        pool_size: int,
        threshold: float = 0.95,
        momentum: float = 0.99,
    ) -> None:
        if mode not in THRESHOLD_MODES:
            raise ValueError(f"unknown threshold mode {mode!r}: use one of {THRESHOLD_MODES}")
        self.mode, self.c, self.tau, self.momentum = mode, num_classes, threshold, momentum
        # flexmatch: the latest confident prediction per pool sample, -1 = none yet.
        self.predicted = torch.full((pool_size,), -1, dtype=torch.long)
        # freematch: EMA of the mean max-confidence and of the mean class probabilities.
        self.global_conf = torch.tensor(1.0 / num_classes)
        self.class_prob = torch.full((num_classes,), 1.0 / num_classes)

    def class_thresholds(self) -> torch.Tensor:
        """(C,) the current threshold of each class."""
        if self.mode == "flexmatch":
            seen = self.predicted[self.predicted >= 0]
            sigma = torch.bincount(seen, minlength=self.c).float()
            unused = float((self.predicted < 0).sum())
            beta = sigma / max(float(sigma.max()), unused, 1.0)
            return self.tau * beta / (2 - beta)
        if self.mode == "freematch":
            return self.global_conf * self.class_prob / self.class_prob.max()
        return torch.full((self.c,), self.tau)

    @torch.no_grad()
    def prime(self, pool_probs: torch.Tensor) -> None:
        """Start from a trained model's (n_pool, C) predictions on the whole pool."""
        probs = pool_probs.detach().float().cpu()
        conf, pred = probs.max(1)
        confident = conf >= self.tau
        self.predicted = torch.where(confident, pred, torch.full_like(pred, -1))
        self.global_conf = conf.mean()
        self.class_prob = probs.mean(0)

    @torch.no_grad()
    def mask(self, probs: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """float (B,) 1 where the weak-view ``probs`` (B, C) row is kept as a target.

        ``indices`` (B,): the rows' positions in the pool (flexmatch tracks each sample).
        """
        probs = probs.detach().float().cpu()
        conf, pred = probs.max(1)
        if self.mode == "freematch":
            m = self.momentum
            self.global_conf = m * self.global_conf + (1 - m) * conf.mean()
            self.class_prob = m * self.class_prob + (1 - m) * probs.mean(0)
        keep = conf >= self.class_thresholds()[pred]
        if self.mode == "flexmatch":
            if indices is None:
                raise ValueError("flexmatch needs the pool positions of the batch")
            idx = indices.cpu()
            confident = conf >= self.tau
            self.predicted[idx[confident]] = pred[confident]
        return keep.float()
