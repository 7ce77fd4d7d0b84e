"""The self-supervised training loop: a backbone trained on an unlabeled image pool.

The method (SwAV, SimCLR, ...) is a head on the projections, looked up by
``SSLConfig.method`` in :mod:`flywheel.learn.ssl.methods`; the loop is the same for all.
It follows DINO's habits: fixed seeds, deterministic per-epoch RNG (so an epoch is a pure
function of the weights it starts from), a checkpoint after every epoch, resume from the
last completed epoch, and an immediate abort on a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from flywheel.datasets.fingerprint import Fingerprint
from flywheel.learn.backbones import (
    AugmentConfig,
    Backbone,
    ViewDataset,
    build_augment,
    build_backbone,
    resolve_device,
)
from flywheel.learn.pool_images import ImageSource, source_fingerprint, torch_view
from flywheel.learn.ssl.distributed import (
    ddp_model,
    distributed_world,
    mean_over_world,
)
from flywheel.learn.ssl.methods import method_head

CHECKPOINT_NAME = "ssl_last.pt"
# Bump when a change to the SSL code makes old checkpoints wrong: they are then not resumed.
# 2: the method's parameters live in its head (``head.*`` in checkpoints); 3: stem_stride
SSL_VERSION = 3


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

    method: str = "swav"  # a name in flywheel.learn.ssl.methods.METHODS
    backbone: str = "small_cnn"  # see flywheel.learn.backbones.BACKBONES
    width: int = 32  # small_cnn channel width
    in_channels: int = 1
    stem_stride: int = 1  # small_cnn: backbones.stem_stride_for(input side)
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
    # The lineage run it is (flywheel.learn.ssl.lineage.SSLRun as a dict), set by the recipe.
    run: dict[str, Any] | None = None

    @property
    def encoder(self) -> nn.Module:
        """backbone + projector: the features to embed with for kNN (better for SwAV)."""
        return nn.Sequential(self.backbone, self.projector).eval()


def build_encoder(cfg: SSLConfig) -> nn.Sequential:
    """A fresh backbone + projection head of ``cfg``'s shape: ``SSLResult.encoder``'s."""
    backbone = build_backbone(
        cfg.backbone, cfg.in_channels, cfg.augment.resize, cfg.width, cfg.stem_stride
    )
    projector = nn.Sequential(
        nn.Linear(backbone.out_dim, cfg.hidden_dim),
        nn.BatchNorm1d(cfg.hidden_dim),
        nn.ReLU(),
        nn.Linear(cfg.hidden_dim, cfg.embedding_dim),
    )
    return nn.Sequential(backbone, projector)


class _SSLModel(nn.Module):
    """Backbone + projection head, and the method's own head that turns projections of
    two views into a loss (``flywheel.learn.ssl.methods``)."""

    def __init__(self, cfg: SSLConfig) -> None:
        super().__init__()
        self.backbone, self.projector = build_encoder(cfg)
        self.head = method_head(cfg)

    def loss(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return self.head.loss(self.projector(self.backbone(torch.cat([v1, v2]))))

    forward = loss  # DistributedDataParallel syncs gradients through forward


def _fingerprint(images: str, cfg: SSLConfig, init: dict[str, torch.Tensor]) -> str:
    # Everything that changes the result; the device may change between resumes.
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}
    key = Fingerprint("ssl-run", SSL_VERSION)
    key.add(repr(sorted(params.items())), images)
    for name, tensor in sorted((init or {}).items()):
        key.add(name, tensor.detach().cpu().numpy())
    return key.hexdigest()


def warmup_steps(steps_per_epoch: int, epochs: int, warmup_epochs: int) -> int:
    """The run's linear warm-up in steps: ``warmup_epochs``, but at most a quarter of the run.

    A short run (a continuation over new samples, a small budget) would otherwise never
    leave its warm-up and never decay.
    """
    return min(steps_per_epoch * warmup_epochs, steps_per_epoch * epochs // 4)


def _lr_at(cfg: SSLConfig, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_ssl(
    images: ImageSource,
    config: SSLConfig,
    checkpoint_dir: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    init_backbone_state: dict[str, torch.Tensor] | None = None,
    init_model_state: dict[str, torch.Tensor] | None = None,
    images_key: str | None = None,
) -> SSLResult:
    """Train a backbone self-supervised on ``images`` (uint8 (N, H, W) or (N, H, W, C)).

    ``checkpoint_dir``: after every epoch the full state is written (atomically) there; a
    later call with the same directory, images and config resumes after the last completed
    epoch and ends with the same weights as an uninterrupted run. ``progress(epoch,
    epochs, mean_loss)`` is called after each epoch. ``init_backbone_state``: the backbone's
    first weights (a pretrained start, ``flywheel.learn.pretrained``) instead of random ones;
    ``init_model_state``: a finished run's whole model (backbone, projector and method head)
    to continue from (``flywheel.learn.ssl.lineage``). ``images_key`` names the images for
    the checkpoint instead of their bytes (content-addressed sample ids and the decoding).
    Raises ``NonFiniteLossError``.
    The caller's torch RNG state is left untouched.
    """
    x = torch_view(images)
    world = distributed_world()
    device = resolve_device(config.device)
    if world is not None and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)  # one GPU per process
    amp = device.type == "cuda"
    batch = min(config.batch_size, len(x))
    if batch < 2:
        raise ValueError("SSL needs at least 2 images")
    with torch.random.fork_rng(devices=[device] if amp else []):
        torch.manual_seed(config.seed)
        model = _SSLModel(config)
        if init_backbone_state is not None:
            model.backbone.load_state_dict(init_backbone_state)
        if init_model_state is not None:
            model.load_state_dict(init_model_state)
        model = model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        losses: list[float] = []
        init = {**(init_backbone_state or {}), **(init_model_state or {})}
        fingerprint = _fingerprint(images_key or source_fingerprint(images), config, init)
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
        # Under DDP each process takes its share of the batch and of every epoch's samples:
        # the global batch, the steps and the schedule stay those of one process.
        share = batch // world.size if world is not None else batch
        if share < 1:
            raise ValueError(f"a batch of {batch} cannot be split over {world.size} processes")
        steps = len(x) // batch
        total = steps * config.epochs
        warmup = warmup_steps(steps, config.epochs, config.warmup_epochs)
        for epoch in range(start, config.epochs):
            # Per-epoch seeds make each epoch reproducible on its own (needed for resume):
            # the generator orders the batches and seeds the workers; manual_seed drives
            # the augmentations when num_workers == 0.
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            torch.manual_seed(config.seed * 100_003 + epoch + (world.rank if world else 0))
            sampler = None
            if world is not None:
                sampler = DistributedSampler(
                    dataset, world.size, world.rank, seed=config.seed * 100_003 + epoch
                )
            loader = DataLoader(
                dataset,
                batch_size=share,
                shuffle=sampler is None,
                sampler=sampler,
                drop_last=True,
                generator=gen,
                num_workers=config.num_workers,
                pin_memory=amp,
            )
            model.train()
            model.head.start_epoch(epoch)
            # Wrapped after the epoch's freezing (SwAV's prototypes): DDP syncs the
            # parameters that require gradients when it is built.
            net = ddp_model(model, device) if world is not None else model.loss
            total_loss = 0.0
            for i, (v1, v2) in enumerate(loader):
                for group in opt.param_groups:
                    group["lr"] = _lr_at(config, epoch * steps + i, total, warmup)
                v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=amp):
                    loss = net(v1, v2)
                total_loss += optimizer_step(
                    loss, opt, scaler, f"SSL loss at epoch {epoch + 1}, step {i + 1}"
                )
                if i + 1 == steps:
                    break
            losses.append(mean_over_world(total_loss / steps, world))
            if world is not None:  # BatchNorm statistics are per process: keep rank 0's
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            if ckpt is not None and (world is None or world.rank == 0):
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
            if world is not None:
                dist.barrier()  # every process sees the epoch's checkpoint before going on
            if progress is not None:
                progress(epoch + 1, config.epochs, losses[-1])
    model = model.cpu().eval()
    return SSLResult(model.backbone, model.projector, losses, start)


def _save_atomic(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a torn checkpoint
