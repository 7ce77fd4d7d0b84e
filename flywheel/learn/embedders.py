"""The modules a cycle embeds with, and how one travels to the processes that embed shards.

Every embedding candidate is an ``nn.Module`` taking float (N, C, H, W) in [0, 1], the
pixel-PCA baseline included (:class:`PixelPCA`), so that one path embeds with any of them:
a shard of the pool at a time, into the embedding store. A select step that fans out over
workers writes its chosen embedder with :func:`embedder_bytes`; each shard task rebuilds it
with :func:`load_embedder` from the cycle's settings and input. The file is a plain state
dict, read with ``weights_only``: no pickled code crosses between processes.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from sklearn.decomposition import PCA
from torch import nn

from flywheel.config import LearningSettings
from flywheel.errors import InvalidInputError
from flywheel.learn.data import ModelInput
from flywheel.learn.pool_images import ImageSource
from flywheel.learn.recipe import ssl_config_for, ssl_shaped_backbone_for
from flywheel.learn.ssl.loop import build_encoder

EMBEDDER_FILE_VERSION = 1
PCA_FIT_ROWS = 20_000  # pool images the pixel-PCA baseline is fitted on, at most
# Candidate names, and what each is rebuilt as from a cycle's settings and input.
SSL, PRETRAINED, PCA_NAME = "ssl", "pretrained", "pca"


class PixelPCA(nn.Module):
    """Pixels (in HWC order, as the fit saw them) projected on principal components."""

    def __init__(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        super().__init__()
        # contiguous: the same layout before and after a round trip, so the same sums
        self.register_buffer("mean", mean.float().contiguous())
        self.register_buffer("components", components.float().contiguous())  # (k, pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.permute(0, 2, 3, 1).reshape(len(x), -1)
        return (flat - self.mean) @ self.components.T

    @classmethod
    def empty(cls, pixels: int, dim: int) -> PixelPCA:
        return cls(torch.zeros(pixels), torch.zeros(dim, pixels))


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def fit_pixel_pca(pool: ImageSource, labeled: ImageSource, dim: int = 32) -> PixelPCA:
    """The label-free baseline: PCA of the pool's pixels (of the labeled images when the
    pool is smaller than ``dim``), fitted on at most ``PCA_FIT_ROWS`` images, so that it
    costs the same at any pool size."""
    fit_on = pool if len(pool) >= dim else labeled
    if len(fit_on) > PCA_FIT_ROWS:
        rows = np.random.default_rng(0).choice(len(fit_on), PCA_FIT_ROWS, replace=False)
        fit_on = fit_on[np.sort(rows)]
    rows = _flat(fit_on[0 : len(fit_on)])
    pca = PCA(n_components=min(dim, *rows.shape), random_state=0).fit(rows)
    return PixelPCA(torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_))


def embedder_bytes(name: str, module: nn.Module) -> bytes:
    """``module``'s weights, to be rebuilt elsewhere as candidate ``name``."""
    if name not in (SSL, PRETRAINED, PCA_NAME):
        raise InvalidInputError(f"no way to rebuild an embedder named {name!r}")
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"version": EMBEDDER_FILE_VERSION, "name": name, "state": state}, buf)
    return buf.getvalue()


def load_embedder(raw: bytes, learning: LearningSettings, spec: ModelInput) -> nn.Module:
    """The module ``embedder_bytes`` wrote, rebuilt for a cycle of ``learning`` and
    ``spec``; InvalidInputError if the file is not one, or does not fit that shape."""
    try:
        saved = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        name, state = saved["name"], saved["state"]
    except Exception as exc:  # any unreadable file: say what it is not
        raise InvalidInputError(f"not an embedder file: {exc}") from exc
    if saved.get("version") != EMBEDDER_FILE_VERSION:
        raise InvalidInputError(f"embedder file version {saved.get('version')!r} is not read")
    if name == PCA_NAME:
        dim, pixels = state["components"].shape
        module: nn.Module = PixelPCA.empty(int(pixels), int(dim))
    elif name == SSL:
        module = build_encoder(ssl_config_for(learning, spec))
    elif name == PRETRAINED:
        module = ssl_shaped_backbone_for(learning, spec)
    else:
        raise InvalidInputError(f"no way to rebuild an embedder named {name!r}")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise InvalidInputError(f"the {name} embedder does not fit this cycle: {exc}") from exc
    return module.eval()
