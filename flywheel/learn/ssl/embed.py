"""Embedding images with a trained backbone: unit-length features for kNN and FAISS."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flywheel.learn.backbones import resolve_device
from flywheel.learn.inference import rows_by_batch
from flywheel.learn.pool_images import ImageSource


@torch.no_grad()
def embed(
    backbone: nn.Module, images: ImageSource, batch_size: int = 512, device: str = "auto"
) -> np.ndarray:
    """Features of ``images`` (uint8 (N, H, W) or (N, H, W, C)) -> float32 (N, D), unit rows.

    ``backbone`` is any module taking float (N, C, H, W) in [0, 1]: ``SSLResult.encoder``
    (backbone + projector, the better kNN features after SwAV), ``SSLResult.backbone`` or
    a classifier's backbone. It is moved to ``device``, run in eval mode, and left in the
    train/eval mode it came in.
    """
    dev = resolve_device(device)
    was_training = backbone.training
    backbone.eval().to(dev)

    def features(xb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, enabled=dev.type == "cuda"):
            return F.normalize(backbone(xb).float(), dim=1)

    try:
        return rows_by_batch(features, images, dev, batch_size)
    finally:
        backbone.train(was_training)
