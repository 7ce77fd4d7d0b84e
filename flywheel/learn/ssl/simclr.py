"""SimCLR (Chen et al. 2020): NT-Xent contrastive loss between two augmented views.

The simpler baseline, and the usual choice when batches are large.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from flywheel.learn.ssl.loop import SSLConfig


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over 2B views: z1, z2 float (B, D), row i of z1 and z2 are the positive pair.

    Each view's negatives are the other 2B - 2 views; mean cross-entropy over all 2B anchors.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))  # a view is not its own negative
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


class Head(nn.Module):
    """No parameters: the loss compares the two views' projections directly."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.temperature = cfg.temperature

    def start_epoch(self, epoch: int) -> None:
        """Nothing changes per epoch."""

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        z1, z2 = z.chunk(2)
        return nt_xent_loss(z1, z2, self.temperature)
