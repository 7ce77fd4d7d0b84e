"""Classifier training on labeled + pseudo-labeled samples, and its evaluation.

Labeled and pseudo-labeled samples arrive together with a per-sample weight (1 for human
labels, the selection confidence for pseudo-labels) and are trained with a weighted
cross-entropy on weakly augmented views. With ``TrainConfig.fixmatch`` the unlabeled pool
adds FixMatch's consistency term: a weak view's confident prediction is the target for a
strong view of the same image (Sohn et al. 2020), with "confident" per class when
``threshold_mode`` is ``flexmatch`` or ``freematch`` (:mod:`flywheel.learn.thresholds`).
The recipe (``flywheel.learn.recipe``) keeps it on in every cycle and continues from the
champion's weights: on real photos the pool is where most of the signal is, and a cycle
that drops it trains a worse model than the one it should replace (BENCHMARKS §17).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from flywheel.learn.backbones import (
    AugmentConfig,
    Classifier,
    ViewDataset,
    build_augment,
    build_backbone,
    resolve_device,
)
from flywheel.learn.inference import rows_by_batch
from flywheel.learn.pool_images import ImageSource, torch_view
from flywheel.learn.ssl.embed import embed
from flywheel.learn.ssl.loop import optimizer_step
from flywheel.learn.thresholds import ConsistencyThresholds, ThresholdMode


@dataclass
class TrainConfig:
    backbone: str = "small_cnn"
    width: int = 32
    in_channels: int = 1
    stem_stride: int = 1  # small_cnn: backbones.stem_stride_for(input side)
    epochs: int = 20  # 10 is enough with fixmatch=True (each step sees 5x the images)
    steps_per_epoch: int | None = None  # None: one pass, but at least min_steps_per_epoch
    min_steps_per_epoch: int = 16  # so that 10 labels still get enough updates
    batch_size: int = 64
    lr: float = 2e-3
    backbone_lr_mult: float = 1.0  # < 1 keeps a pretrained backbone closer to its SSL state
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    weak: AugmentConfig = field(default_factory=lambda: AugmentConfig.for_digits("weak"))
    strong: AugmentConfig = field(default_factory=lambda: AugmentConfig.for_digits("strong"))
    fixmatch: bool = False
    fixmatch_threshold: float = 0.95
    # "fixed" (FixMatch), or class-adaptive: "flexmatch" / "freematch" (learn/thresholds.py)
    threshold_mode: ThresholdMode = "fixed"
    threshold_momentum: float = 0.99  # freematch: EMA momentum of its confidence estimates
    fixmatch_mu: int = 3  # unlabeled batch = mu * batch_size
    fixmatch_weight: float = 1.0
    # > 0: the returned model is an exponential moving average of the weights (FixMatch
    # evaluates with one), at this decay once past ema_decay_at's warm-up; 0: the last weights.
    ema_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0


@dataclass
class TrainedClassifier:
    model: Classifier  # on CPU, eval mode
    num_classes: int
    losses: list[float]  # mean loss per epoch

    @torch.no_grad()
    def predict_proba(
        self, images: ImageSource, batch_size: int = 512, device: str = "auto"
    ) -> np.ndarray:
        """uint8 (N, H, W) or (N, H, W, C) -> float32 (N, num_classes), rows sum to 1."""
        dev = resolve_device(device)
        self.model.eval().to(dev)
        model = self.model

        def probs(xb: torch.Tensor) -> torch.Tensor:
            return F.softmax(model(xb).float(), dim=1)

        return rows_by_batch(probs, images, dev, batch_size)

    def embed(self, images: ImageSource, batch_size: int = 512, device: str = "auto") -> np.ndarray:
        """The classifier backbone's features: float32 (N, D), L2-normalised rows."""
        return embed(self.model.backbone, images, batch_size, device)


def train_classifier(
    images: ImageSource,
    labels: np.ndarray,
    sample_weights: np.ndarray | None,
    config: TrainConfig,
    num_classes: int,
    init_backbone_state: dict | None = None,
    unlabeled_images: ImageSource | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    init_model_state: dict | None = None,
) -> TrainedClassifier:
    """Train backbone + linear head.

    images: uint8 (N, H, W) or (N, H, W, C); labels: int (N,) in [0, num_classes);
    sample_weights: float (N,) >= 0 or None (all 1). ``init_backbone_state`` is a
    ``Backbone.state_dict()`` (e.g. from ``train_ssl``) built with the same backbone name,
    width and ``weak.resize``. ``unlabeled_images`` feed the FixMatch term when
    ``config.fixmatch``. ``progress(epoch, epochs, mean_loss)`` after each epoch.
    ``init_model_state``: a whole ``Classifier.state_dict()`` (backbone and head) to continue
    from, e.g. the champion's; it takes precedence over ``init_backbone_state``.
    """
    x = torch_view(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    w = torch.ones(len(x)) if sample_weights is None else torch.as_tensor(sample_weights).float()
    if not (len(x) == len(y) == len(w)) or len(x) == 0:
        raise ValueError(
            f"need equal, non-zero lengths: {len(x)} images, {len(y)} labels, {len(w)} weights"
        )
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    use_fm = config.fixmatch and unlabeled_images is not None and len(unlabeled_images) > 0
    device = resolve_device(config.device)
    amp = device.type == "cuda"
    steps = config.steps_per_epoch or max(
        math.ceil(len(x) / config.batch_size), config.min_steps_per_epoch
    )

    with torch.random.fork_rng(devices=[device] if amp else []):
        torch.manual_seed(config.seed)
        backbone = build_backbone(
            config.backbone,
            config.in_channels,
            config.weak.resize,
            config.width,
            config.stem_stride,
        )
        if init_backbone_state is not None:
            backbone.load_state_dict(init_backbone_state)
        model = Classifier(backbone, num_classes)
        if init_model_state is not None:
            model.load_state_dict(init_model_state)
        model = model.to(device)
        ema = copy.deepcopy(model) if config.ema_decay > 0 else None
        groups = [
            {"params": model.backbone.parameters(), "lr": config.lr * config.backbone_lr_mult},
            {"params": model.head.parameters(), "lr": config.lr},
        ]
        for g in groups:
            g["base_lr"] = g["lr"]
        opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        weak, strong = build_augment(config.weak), build_augment(config.strong)
        labeled = ViewDataset(x, [weak], [y, w])
        if use_fm:
            u = torch_view(unlabeled_images)
            unlabeled = ViewDataset(u, [weak, strong], [torch.arange(len(u))])
            thresholds = ConsistencyThresholds(
                config.threshold_mode,
                num_classes,
                len(u),
                config.fixmatch_threshold,
                config.threshold_momentum,
            )
            if init_model_state is not None:  # a trained model: thresholds from its view
                thresholds.prime(_predict(model, unlabeled_images, device))
        losses: list[float] = []
        total = steps * config.epochs
        for epoch in range(config.epochs):
            gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            torch.manual_seed(config.seed * 100_003 + epoch)
            lab_loader = _loader(labeled, config.batch_size, steps, gen, config, amp)
            unl_iter = None
            if use_fm:
                unl_batch = config.batch_size * config.fixmatch_mu
                unl_iter = iter(_loader(unlabeled, unl_batch, steps, gen, config, amp))
            model.train()
            epoch_loss = 0.0
            for i, (xb, yb, wb) in enumerate(lab_loader):
                frac = (epoch * steps + i) / total
                for g in opt.param_groups:  # cosine decay, as in FixMatch
                    g["lr"] = g["base_lr"] * math.cos(7 * math.pi * frac / 16)
                xb, yb, wb = xb.to(device), yb.to(device), wb.to(device)
                with torch.autocast(device.type, enabled=amp):
                    if unl_iter is None:
                        logits = model(xb).float()
                        loss_u = torch.zeros((), device=device)
                    else:
                        uw, us, u_idx = next(unl_iter)
                        out = model(torch.cat([xb, uw.to(device), us.to(device)])).float()
                        logits, lw, ls = out[: len(xb)], *out[len(xb) :].chunk(2)
                        probs_u = F.softmax(lw.detach(), dim=1)
                        pseudo = probs_u.argmax(1)
                        mask = thresholds.mask(probs_u, u_idx).to(device)
                        loss_u = (F.cross_entropy(ls, pseudo, reduction="none") * mask).mean()
                    ce = F.cross_entropy(
                        logits, yb, reduction="none", label_smoothing=config.label_smoothing
                    )
                    loss = (ce * wb).sum() / wb.sum().clamp_min(1e-8)
                    loss = loss + config.fixmatch_weight * loss_u
                epoch_loss += optimizer_step(
                    loss, opt, scaler, f"classifier loss at epoch {epoch + 1}, step {i + 1}"
                )
                if ema is not None:
                    ema_update(ema, model, ema_decay_at(epoch * steps + i, config.ema_decay))
            losses.append(epoch_loss / steps)
            if progress is not None:
                progress(epoch + 1, config.epochs, losses[-1])
    final = ema if ema is not None else model
    return TrainedClassifier(final.cpu().eval(), num_classes, losses)


def ema_decay_at(step: int, decay: float) -> float:
    """The average's decay after optimizer step ``step`` (0-based): ``decay``, but at most
    (1 + step) / (10 + step), so that a short run's average is not mostly its start."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model, for parameters and floating buffers (batch
    norm's running statistics); integer buffers (batch counts) are copied."""
    for e, m in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(m.detach(), alpha=1 - decay)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(decay).add_(m, alpha=1 - decay)
        else:
            e.copy_(m)


@torch.no_grad()
def _predict(model: Classifier, images: ImageSource, device: torch.device) -> torch.Tensor:
    """(N, C) eval-mode probabilities of uint8 (N, H, W[, C]) ``images``, batch by batch."""
    model.eval()
    probs = rows_by_batch(lambda xb: F.softmax(model(xb).float(), dim=1), images, device)
    return torch.from_numpy(probs)


def _loader(
    ds: ViewDataset, batch: int, steps: int, gen: torch.Generator, cfg: TrainConfig, pin: bool
) -> DataLoader:
    # Sampling with replacement gives a fixed number of full batches even from 10 labels.
    sampler = RandomSampler(ds, replacement=True, num_samples=batch * steps, generator=gen)
    return DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=pin,
        generator=gen,
    )


@dataclass
class EvalResult:
    accuracy: float
    per_class_accuracy: list[float | None]  # None for a class absent from ``labels``
    ece: float  # expected calibration error, equal-width confidence bins
    confusion: list[list[int]]  # [true][predicted] counts
    n: int


def evaluate(
    probs: np.ndarray, labels: np.ndarray, num_classes: int, n_bins: int = 15
) -> EvalResult:
    """Score predictions: probs float (N, C) rows summing to 1, labels int (N,).

    ECE = sum over bins b of |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|, where the
    confidence of a sample is its max probability and bins are (i/n_bins, (i+1)/n_bins].
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or probs.shape != (len(labels), num_classes) or len(labels) == 0:
        raise ValueError(f"probs must be (N, {num_classes}) for N={len(labels)} > 0 labels")
    pred = probs.argmax(1)
    conf = probs.max(1)
    correct = pred == labels
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    per_class = [
        float(confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)
    ]
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return EvalResult(float(correct.mean()), per_class, float(ece), confusion.tolist(), len(labels))
