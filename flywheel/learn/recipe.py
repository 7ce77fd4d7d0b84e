"""How a cycle learns, from ``LearningSettings``: the SSL backbone and the classifier.

Builds the learning modules' configs (``ssl``, ``training``) from the cycle's settings and
runs them on a ``CycleData``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from torch import nn

from flywheel.config import LearningSettings
from flywheel.datasets.fingerprint import fingerprint
from flywheel.learn.backbones import (
    AugmentConfig,
    Backbone,
    Classifier,
    build_backbone,
    stem_stride_for,
)
from flywheel.learn.data import CycleData, ModelInput
from flywheel.learn.pool_images import stack_images
from flywheel.learn.pretrained import PretrainedStart, load_pretrained
from flywheel.learn.ssl.lineage import (
    SSLRun,
    last_run,
    lineage_file,
    parent_state,
    plan_run,
    record_run,
)
from flywheel.learn.ssl.loop import SSL_VERSION, SSLConfig, SSLResult, train_ssl
from flywheel.learn.thresholds import ThresholdMode
from flywheel.learn.training import TrainConfig, TrainedClassifier, train_classifier
from flywheel.store.blobs import BlobStore
from flywheel.store.id_index import SampleIds


def augmentations(learning: LearningSettings) -> tuple[AugmentConfig, AugmentConfig]:
    """(weak, strong) views for the data set family; ``image_size`` overrides the resize.

    ``learning.augment`` must be decided: a cycle's settings are (flywheel.cycle.profile).
    """
    if learning.augment == "auto":
        raise ValueError("learning.augment is 'auto': decide the data profile first")
    preset = AugmentConfig.for_digits if learning.augment == "digits" else AugmentConfig.for_natural
    weak, strong = preset("weak"), preset("strong")
    if learning.image_size is not None and learning.augment == "natural":
        weak.resize = strong.resize = learning.image_size
    return weak, strong


def channels_of(data: CycleData, learning: LearningSettings) -> int:
    """The images' channels: as loaded (the data profile decided them)."""
    if data.input is not None:
        return data.input.channels
    return learning.channels or (3 if data.labeled.images.ndim == 4 else 1)


def stem_stride(data: CycleData) -> int:
    side = data.input.size if data.input is not None else data.labeled.images.shape[1]
    return stem_stride_for(side)


def input_of(data: CycleData, learning: LearningSettings) -> ModelInput:
    """What the cycle's images were brought to (for data built from arrays: their shape)."""
    if data.input is not None:
        return data.input
    return ModelInput(data.labeled.images.shape[1], channels_of(data, learning), learning.resize)


def ssl_config_for(learning: LearningSettings, spec: ModelInput) -> SSLConfig:
    """The SSL config of a cycle of ``learning`` whose images are ``spec``."""
    _, strong = augmentations(learning)
    return SSLConfig(
        method=learning.ssl_method,
        backbone=learning.backbone,
        width=learning.width,
        in_channels=spec.channels,
        stem_stride=stem_stride_for(spec.size),
        epochs=learning.ssl_epochs,
        augment=strong,
        seed=learning.seed,
        device=learning.device,
        num_workers=learning.num_workers,
    )


def ssl_config(learning: LearningSettings, data: CycleData) -> SSLConfig:
    return ssl_config_for(learning, input_of(data, learning))


def pretrained_start(
    learning: LearningSettings, data: CycleData, blobs: BlobStore | None
) -> PretrainedStart | None:
    """``learning.pretrained`` fitted to this cycle's backbone; None when not set."""
    if learning.pretrained is None:
        return None
    return load_pretrained(learning.pretrained, ssl_shaped_backbone(learning, data), blobs)


def ssl_shaped_backbone_for(learning: LearningSettings, spec: ModelInput) -> Backbone:
    """A fresh backbone of the shape the SSL model (and classifier) of such a cycle has."""
    cfg = ssl_config_for(learning, spec)
    return build_backbone(
        cfg.backbone, cfg.in_channels, cfg.augment.resize, cfg.width, cfg.stem_stride
    )


def ssl_shaped_backbone(learning: LearningSettings, data: CycleData) -> Backbone:
    """A fresh backbone of the shape the cycle's SSL model (and classifier) has."""
    return ssl_shaped_backbone_for(learning, input_of(data, learning))


def start_backbone(
    learning: LearningSettings,
    data: CycleData,
    ssl: SSLResult | None,
    start: PretrainedStart | None,
) -> Backbone | None:
    """What the classifier's backbone starts from: the SSL model (itself adapted from the
    pretrained start, when there is one), else the pretrained weights, else nothing."""
    if ssl is not None:
        return ssl.backbone
    if start is None:
        return None
    backbone = ssl_shaped_backbone(learning, data)
    backbone.load_state_dict(start.state)
    return backbone


def train_ssl_backbone(
    data: CycleData,
    learning: LearningSettings,
    cache_dir: Path,
    progress: Callable[[int, int, float], None] | None = None,
    pretrained: PretrainedStart | None = None,
    run: SSLRun | None = None,
) -> SSLResult | None:
    """Self-supervised backbone on every non-test image (labels unused); None if disabled.

    An unchanged pool reuses the lineage's finished model, a grown one continues it for a
    budget in samples seen (``flywheel.learn.ssl.lineage``), and an interrupted run resumes
    where it stopped. ``pretrained``: a first run starts from it, and SSL adapts it to the
    pool (SEER's recipe). ``run``: the run another step planned (``SSLResult.run``), so a
    later step of the cycle gets the same model whatever the lineage did since.
    """
    if learning.ssl_epochs == 0:
        return None
    cfg = ssl_config(learning, data)
    ids = SampleIds(data.labeled.ids) + data.pool_ids
    # Sorted by id, not labeled-then-pool: labels are not used, so a sample that gets a
    # label (feedback, review) must not change the input, or the checkpoint is unusable.
    order = np.argsort(ids.keys, kind="stable")  # ASCII: the order of the ids as strings
    # The input size and resize policy are part of the images: a change must not reuse.
    ids_in_order = ids[order].lines().decode()
    setup = [repr(cfg), repr(data.input), pretrained.digest if pretrained is not None else ""]
    lineage = lineage_file(cache_dir, "\n".join(setup))
    images_key = fingerprint("ssl-images", SSL_VERSION, ids_in_order, length=24)
    if run is None or run.images != images_key:
        run = plan_run(lineage, last_run(lineage), images_key, len(ids), learning.ssl_epochs)
    parent = parent_state(cache_dir, run)
    if run.parent is not None and parent is None:  # its parent is not on this node
        run = plan_run(lineage, None, images_key, len(ids), learning.ssl_epochs)
    images = stack_images([data.labeled.images, data.pool_images])[np.asarray(order)]
    start = pretrained.state if pretrained is not None and parent is None else None
    # Named by ids (content hashes) and the decoding, not by how the images are held: a
    # sample that moves from the pool to the labeled set keeps the checkpoint.
    result = train_ssl(
        images,
        replace(cfg, epochs=run.epochs),
        cache_dir / run.key,
        progress,
        start,
        parent,
        images_key=f"{images_key}/{data.input!r}",
    )
    record_run(lineage, run)
    result.run = asdict(run)
    return result


def fit_classifier(
    data: CycleData,
    accepted: np.ndarray,
    pseudo_labels: np.ndarray,
    pseudo_weights: np.ndarray,
    learning: LearningSettings,
    ssl_backbone: Backbone | None,
    fixmatch: bool,
    seed: int,
    on_epoch: Callable[[int, int, float], None] | None = None,
    start_from: nn.Module | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainedClassifier:
    """Backbone (from SSL when present) + head on human labels and accepted pseudo-labels.

    ``accepted``: bool (n_pool,) mask of the pool; ``pseudo_labels``/``pseudo_weights``: one
    per accepted sample (class index, selection score). Human labels weigh 1. ``fixmatch``
    adds the consistency term over the whole pool, with ``learning.consistency_thresholds``.
    ``start_from``: a ``Classifier`` of the same shape (the champion) to continue training;
    such a cycle runs ``continue_epochs``, a fresh start ``fixmatch_epochs``.
    ``teacher``: (labels, weights), one per pool sample (flywheel.select.teacher): targets
    for the pool samples that were not accepted, each weighted by its certainty.
    """
    weak, strong = augmentations(learning)
    taught = np.zeros(len(accepted), dtype=bool)
    if teacher is not None:
        taught = ~accepted & (teacher[1] > 0)
    images = stack_images(
        [data.labeled.images, data.pool_images[accepted], data.pool_images[taught]]
    )
    parts = [(data.labeled.labels, np.ones(len(data.labeled.labels)))]
    parts.append((pseudo_labels, pseudo_weights))
    if teacher is not None:
        parts.append((teacher[0][taught], teacher[1][taught]))
    labels = np.concatenate([p[0] for p in parts]).astype(np.int64)
    weights = class_balanced(labels, np.concatenate([p[1] for p in parts]))
    epochs = learning.fixmatch_epochs if fixmatch else learning.train_epochs
    cfg = TrainConfig(
        backbone=learning.backbone,
        width=learning.width,
        in_channels=channels_of(data, learning),
        stem_stride=stem_stride(data),
        epochs=learning.continue_epochs if start_from is not None else epochs,
        lr=TrainConfig.lr * (learning.continue_lr_scale if start_from is not None else 1.0),
        steps_per_epoch=learning.steps_per_epoch,
        batch_size=learning.batch_size,
        weak=weak,
        strong=strong,
        fixmatch=fixmatch,
        fixmatch_mu=learning.fixmatch_mu,
        ema_decay=learning.ema_decay,
        threshold_mode=consistency_thresholds(learning, start_from is not None),
        seed=seed,
        device=learning.device,
        num_workers=learning.num_workers,
    )
    return train_classifier(
        images,
        labels,
        weights.astype(np.float32),
        cfg,
        data.num_classes,
        init_backbone_state=ssl_backbone.state_dict() if ssl_backbone is not None else None,
        unlabeled_images=data.pool_images if fixmatch else None,
        progress=on_epoch,
        init_model_state=start_from.state_dict() if start_from is not None else None,
    )


def class_balanced(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights`` rescaled so that every class present carries the same total weight.

    Calibrated selection accepts where each class has evidence, so classes arrive with very
    different numbers of pseudo-labels (some none); trained as they come, the model learns
    the class mix instead of the classes (on digits: 60 % coverage at 99 % precision, yet
    80 % test accuracy). The mean total is kept, so the loss scale does not move."""
    totals = np.bincount(labels, weights=weights)
    present = totals > 0
    scale = np.zeros_like(totals)
    scale[present] = totals[present].mean() / totals[present]
    return weights * scale[labels]


def consistency_thresholds(learning: LearningSettings, continuing: bool) -> ThresholdMode:
    """The class-adaptive rule for a model that continues (its thresholds primed from its
    own view of the pool); FixMatch's fixed 0.95 for a fresh one. Started from nothing,
    FlexMatch's thresholds sit near 0 for the whole of a short first cycle, and on digits
    that collapsed 2 of 3 seeds' first models to 78-85 % (BENCHMARKS §17)."""
    return learning.consistency_thresholds if continuing else "fixed"


def classifier_probs(model: nn.Module, images: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (N, num_classes) probabilities of a trained ``Classifier`` on uint8 images."""
    if not isinstance(model, Classifier):
        raise TypeError(f"expected a flywheel Classifier, got {type(model).__name__}")
    return TrainedClassifier(model, num_classes, []).predict_proba(images)
