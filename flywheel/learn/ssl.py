"""Self-supervised training of a backbone on an unlabeled image pool, and embedding with it.

Two methods from the SEER lineage are implemented with one loop:

* ``simclr`` — NT-Xent contrastive loss between two augmented views (Chen et al. 2020).
* ``swav`` — swapped prediction of Sinkhorn-balanced prototype codes (Caron et al. 2020;
  SEER's method).

Default: ``swav``, chosen by measurement on the digits pool (``bench/LEARNING_NOTES.md``):
with the same CPU budget (30 epochs, small CNN, strong digit augmentations) SwAV's
projection-head features gave 82-85 % pool accuracy for 1-nearest-labeled-neighbour at
1 label per class and ~95 % at 5, against 74-75 % / 93 % for SimCLR and 63-68 % / 83-86 %
for raw pixels or PCA. SimCLR stays selectable; it is the simpler baseline and the usual
choice when batches are large. Strong augmentations matter for both: with mild ones SwAV
fell to 68 % at 1 label per class.

The loop follows DINO's habits: fixed seeds, deterministic per-epoch RNG (so an epoch is a
pure function of the weights it starts from), a checkpoint after every epoch, resume from
the last completed epoch, and an immediate abort on a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from flywheel.datasets.fingerprint import fingerprint
from flywheel.learn.backbones import (
    AugmentConfig,
    Backbone,
    ViewDataset,
    build_augment,
    build_backbone,
    images_to_tensor,
    resolve_device,
)

CHECKPOINT_NAME = "ssl_last.pt"
# Bump when a change to the SSL code makes old checkpoints wrong: they are then not resumed.
SSL_VERSION = 1


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/inf: stop rather than write garbage weights."""


def optimizer_step(
    loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, where: str
) -> float:
    """One (AMP-scaled) step; refuse a non-finite loss rather than write garbage weights.

    ``where`` names the spot for the error (e.g. "SSL loss ... at epoch 3, step 7").
    """
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{where} is {loss.item()}; lower lr or check the inputs")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    return loss.item()


@dataclass
class SSLConfig:
    """Everything that determines the trained weights (it is part of the checkpoint key).

    Defaults are the digits recipe; for photos use ``AugmentConfig.for_natural("strong")``
    and a ResNet. ``num_workers`` > 0 runs the augmentations in DataLoader worker processes.
    """

    method: str = "swav"  # "swav" | "simclr"
    backbone: str = "small_cnn"  # see flywheel.learn.backbones.BACKBONES
    width: int = 32  # small_cnn channel width
    in_channels: int = 1
    embedding_dim: int = 128  # projection-head output the loss sees
    hidden_dim: int = 512
    epochs: int = 30
    batch_size: int = 128  # on 1.3k images, more steps beat bigger batches
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    temperature: float = 0.2  # NT-Xent / SwAV softmax temperature
    n_prototypes: int = 50  # swav; ~5x the classes (10 and 100 both measured worse)
    # Per-data-set choice: the digits preset has no flips (a mirrored 2 is not a 2).
    sinkhorn_eps: float = 0.05  # swav
    freeze_prototypes_epochs: int = 1  # swav: let codes settle before prototypes move
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig.for_digits("strong"))
    seed: int = 0
    device: str = "auto"  # "auto" -> cuda + AMP when present, else cpu
    num_workers: int = 0


@dataclass
class SSLResult:
    backbone: Backbone  # on CPU, eval mode
    projector: nn.Module  # backbone features -> embedding_dim (what the loss saw)
    losses: list[float]  # mean training loss per epoch, all epochs including resumed ones
    resumed_from_epoch: int  # 0 when trained from scratch

    @property
    def encoder(self) -> nn.Module:
        """backbone + projector: the features to embed with for kNN (better for SwAV)."""
        return nn.Sequential(self.backbone, self.projector).eval()


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


class _SSLModel(nn.Module):
    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        size = cfg.augment.resize
        self.backbone = build_backbone(cfg.backbone, cfg.in_channels, size, cfg.width)
        d = self.backbone.out_dim
        self.projector = nn.Sequential(
            nn.Linear(d, cfg.hidden_dim),
            nn.BatchNorm1d(cfg.hidden_dim),
            nn.ReLU(),
            nn.Linear(cfg.hidden_dim, cfg.embedding_dim),
        )
        self.prototypes = nn.Linear(cfg.embedding_dim, cfg.n_prototypes, bias=False)

    def loss(self, cfg: SSLConfig, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        if cfg.method == "simclr":
            return nt_xent_loss(z1, z2, cfg.temperature)
        with torch.no_grad():  # prototypes live on the unit sphere (SwAV)
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        s = self.prototypes(F.normalize(z.float(), dim=1))
        s1, s2 = s.chunk(2)
        return swav_loss(s1, s2, cfg.temperature, cfg.sinkhorn_eps)


def _fingerprint(images: torch.Tensor, cfg: SSLConfig) -> str:
    # Everything that changes the result; the device may change between resumes.
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}
    return fingerprint("ssl-run", SSL_VERSION, repr(sorted(params.items())), images.numpy())


def _lr_at(cfg: SSLConfig, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_ssl(
    images: np.ndarray,
    config: SSLConfig,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> SSLResult:
    """Train a backbone self-supervised on ``images`` (uint8 (N, H, W) or (N, H, W, C)).

    ``checkpoint_dir``: after every epoch the full state is written (atomically) there; a
    later call with the same directory, images and config resumes after the last completed
    epoch and ends with the same weights as an uninterrupted run. ``progress(epoch,
    epochs, mean_loss)`` is called after each epoch. Raises ``NonFiniteLossError``.
    The caller's torch RNG state is left untouched.
    """
    x = images_to_tensor(images)
    device = resolve_device(config.device)
    amp = device.type == "cuda"
    batch = min(config.batch_size, len(x))
    if batch < 2:
        raise ValueError("SSL needs at least 2 images")
    with torch.random.fork_rng(devices=[device] if amp else []):
        torch.manual_seed(config.seed)
        model = _SSLModel(config).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        losses: list[float] = []
        fingerprint = _fingerprint(x, config)
        ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location=device, weights_only=False)
            if state["fingerprint"] != fingerprint:
                raise ValueError(f"{ckpt} was written for other images or another config")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            scaler.load_state_dict(state["scaler"])
            losses = list(state["losses"])
        start = len(losses)

        aug = build_augment(config.augment)
        dataset = ViewDataset(x, [aug, aug])
        steps = len(x) // batch
        total, warmup = steps * config.epochs, steps * config.warmup_epochs
        for epoch in range(start, config.epochs):
            # Per-epoch seeds make each epoch reproducible on its own (needed for resume):
            # the generator orders the batches and seeds the workers; manual_seed drives
            # the augmentations when num_workers == 0.
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            torch.manual_seed(config.seed * 100_003 + epoch)
            loader = DataLoader(
                dataset,
                batch_size=batch,
                shuffle=True,
                drop_last=True,
                generator=gen,
                num_workers=config.num_workers,
                pin_memory=amp,
            )
            model.train()
            freeze = config.method == "swav" and epoch < config.freeze_prototypes_epochs
            model.prototypes.weight.requires_grad_(not freeze)
            total_loss = 0.0
            for i, (v1, v2) in enumerate(loader):
                for group in opt.param_groups:
                    group["lr"] = _lr_at(config, epoch * steps + i, total, warmup)
                v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=amp):
                    loss = model.loss(config, v1, v2)
                total_loss += optimizer_step(
                    loss, opt, scaler, f"SSL loss at epoch {epoch + 1}, step {i + 1}"
                )
            losses.append(total_loss / steps)
            if ckpt is not None:
                _save_atomic(
                    ckpt,
                    {
                        "fingerprint": fingerprint,
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "scaler": scaler.state_dict(),
                        "losses": losses,
                    },
                )
            if progress is not None:
                progress(epoch + 1, config.epochs, losses[-1])
    model = model.cpu().eval()
    return SSLResult(model.backbone, model.projector, losses, start)


def _save_atomic(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a torn checkpoint


@torch.no_grad()
def embed(
    backbone: nn.Module, images: np.ndarray, batch_size: int = 512, device: str = "auto"
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
    x = images_to_tensor(images)
    out = []
    try:
        # range(0, max(len, 1)): an empty input still yields a (0, D) array.
        for i in range(0, max(len(x), 1), batch_size):
            xb = x[i : i + batch_size].to(dev).float() / 255.0
            with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                out.append(F.normalize(backbone(xb).float(), dim=1).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out).numpy().astype(np.float32)
