"""SwAV (Caron et al. 2020; SEER's method): swapped prediction of Sinkhorn-balanced
prototype codes.

The default, chosen by measurement on the digits pool (``bench/LEARNING_NOTES.md``): with
the same CPU budget (30 epochs, small CNN, strong digit augmentations) SwAV's
projection-head features gave 82-85 % pool accuracy for 1-nearest-labeled-neighbour at 1
label per class and ~95 % at 5, against 74-75 % / 93 % for SimCLR and 63-68 % / 83-86 % for
raw pixels or PCA. Strong augmentations matter: with mild ones SwAV fell to 68 % at 1 label
per class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from flywheel.learn.ssl.loop import SSLConfig


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, eps: float, iters: int = 3) -> torch.Tensor:
    """Equal-partition soft codes: scores float (B, K) -> codes (B, K), rows sum to 1."""
    q = (scores.float() / eps).T  # (K, B)
    q = torch.exp(q - q.max())
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True) * k  # each prototype gets 1/K of the mass
        q /= q.sum(dim=0, keepdim=True) * b  # each sample gets 1/B
    return (q * b).T


def swav_loss(s1: torch.Tensor, s2: torch.Tensor, temperature: float, eps: float) -> torch.Tensor:
    """Swapped prediction: s1, s2 float (B, K) prototype scores (cosine) of the two views."""
    q1, q2 = sinkhorn(s1.detach(), eps), sinkhorn(s2.detach(), eps)
    p1 = F.log_softmax(s1.float() / temperature, dim=1)
    p2 = F.log_softmax(s2.float() / temperature, dim=1)
    return -0.5 * ((q1 * p2).sum(1).mean() + (q2 * p1).sum(1).mean())


class Head(nn.Module):
    """``n_prototypes`` prototypes on the unit sphere, scored by cosine against each view."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.prototypes = nn.Linear(cfg.embedding_dim, cfg.n_prototypes, bias=False)
        self.temperature, self.eps = cfg.temperature, cfg.sinkhorn_eps
        self.freeze_epochs = cfg.freeze_prototypes_epochs

    def start_epoch(self, epoch: int) -> None:
        """The prototypes stay still for the first epochs: the codes settle before they move."""
        self.prototypes.weight.requires_grad_(epoch >= self.freeze_epochs)

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # prototypes live on the unit sphere
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        s = self.prototypes(F.normalize(z.float(), dim=1))
        s1, s2 = s.chunk(2)
        return swav_loss(s1, s2, self.temperature, self.eps)
