"""The learning steps of a cycle, on a ``CycleData``: SSL backbone, selection, training.

Glue between the records (``cycle_data``) and the learning modules (``ssl``, ``selection``,
``training``): it builds their configs from ``LearningSettings`` and keeps ids next to
arrays, so evidence can name neighbours by sample id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from torch import nn

from flywheel.config import LearningSettings
from flywheel.learn.backbones import AugmentConfig, Backbone, Classifier
from flywheel.learn.data import CycleData
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.learn.index import build_index
from flywheel.learn.ssl import SSLConfig, SSLResult, train_ssl
from flywheel.learn.training import TrainConfig, TrainedClassifier, train_classifier
from flywheel.select.agreement import AgreementConfig, select_by_agreement, share_for_round
from flywheel.select.calibrated import (
    Decision,
    SelectionConfig,
    SelectionResult,
    select_pseudo_labels,
)


def augmentations(learning: LearningSettings) -> tuple[AugmentConfig, AugmentConfig]:
    """(weak, strong) views for the data set family; ``image_size`` overrides the resize."""
    preset = AugmentConfig.for_digits if learning.augment == "digits" else AugmentConfig.for_natural
    weak, strong = preset("weak"), preset("strong")
    if learning.image_size is not None and learning.augment == "natural":
        weak.resize = strong.resize = learning.image_size
    return weak, strong


def ssl_config(learning: LearningSettings) -> SSLConfig:
    _, strong = augmentations(learning)
    return SSLConfig(
        method=learning.ssl_method,
        backbone=learning.backbone,
        width=learning.width,
        in_channels=learning.channels,
        epochs=learning.ssl_epochs,
        augment=strong,
        seed=learning.seed,
        device=learning.device,
        num_workers=learning.num_workers,
    )


def train_ssl_backbone(
    data: CycleData,
    learning: LearningSettings,
    cache_dir: Path,
    progress: Callable[[int, int, float], None] | None = None,
) -> SSLResult | None:
    """Self-supervised backbone on every non-test image (labels unused); None if disabled.

    The checkpoint folder is named by the images and the config, so an unchanged pool reuses
    the finished model, and an interrupted run resumes where it stopped.
    """
    if learning.ssl_epochs == 0:
        return None
    cfg = ssl_config(learning)
    ids = data.labeled.ids + data.pool_ids
    # Sorted by id, not labeled-then-pool: labels are not used, so a sample that gets a
    # label (feedback, review) must not change the input, or the checkpoint is unusable.
    order = sorted(range(len(ids)), key=ids.__getitem__)
    # The input size and resize policy are part of the images: a change must not reuse.
    named = "\n".join(ids[i] for i in order) + repr(cfg) + repr(data.input)
    key = hashlib.sha256(named.encode()).hexdigest()
    images = np.concatenate([data.labeled.images, data.pool_images])[order]
    return train_ssl(images, cfg, cache_dir / key[:24], progress)


@dataclass
class SelectionOutcome:
    result: SelectionResult
    reference_ids: list[str]  # what result.neighbor_ids index into
    embedding: str
    calibration: str  # how the thresholds were calibrated
    index: faiss.Index | None = None  # the anchors' FAISS index, kept with the cycle's run

    def evidence(self, i: int) -> dict[str, Any]:
        """Provenance of pool sample ``i``'s decision, small enough for a JSON column."""
        r = self.result
        neighbours = [
            [self.reference_ids[j], round(float(s), 4)]
            for j, s in zip(r.neighbor_ids[i], r.neighbor_sims[i], strict=True)
            if j >= 0
        ]
        return {
            "decision": Decision(int(r.decision[i])).name.lower(),
            "score": round(float(r.score[i]), 5),
            "classifier_prob": round(float(r.classifier_prob[i]), 5),
            "knn_share": round(float(r.knn_share[i]), 5),
            "threshold": _finite(float(r.thresholds[int(r.label[i])])),
            "neighbors": neighbours,
            "embedding": self.embedding,
            "calibration": self.calibration,
        }


def _finite(x: float) -> float | None:
    """JSON has no infinity: a class that accepts nothing has no threshold."""
    return x if np.isfinite(x) else None


def _selection_classifier() -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=2000)


def pseudo_anchors(
    data: CycleData, choice: EmbeddingChoice
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Pool samples whose current label is a pseudo-label: embeddings, classes, weights, ids."""
    index = {c: i for i, c in enumerate(data.classes)}
    has = np.array([sid in data.pool_current for sid in data.pool_ids], dtype=bool)
    ids = [sid for sid, h in zip(data.pool_ids, has, strict=True) if h]
    labels = np.array([index[data.pool_current[sid][0]] for sid in ids], dtype=np.int64)
    weights = np.array([data.pool_current[sid][1] for sid in ids], dtype=np.float64)
    return choice.pool[has], labels, weights, ids


def select_by_model_agreement(
    data: CycleData,
    choice: EmbeddingChoice,
    learning: LearningSettings,
    model_probs: np.ndarray,
    round_: int,
) -> SelectionOutcome:
    """The ``agreement`` strategy: see ``flywheel.select.agreement``; ``model_probs`` (n_pool, C)
    come from the newest trained classifier, ``round_`` counts earlier selecting cycles."""
    px, py, pw, pids = pseudo_anchors(data, choice)
    share = share_for_round(round_, learning.share_start, learning.share_end, learning.share_steps)
    anchors = np.concatenate([choice.labeled, px])
    index = build_index(anchors, learning.index_kind)
    result = select_by_agreement(
        choice.pool,
        model_probs,
        anchors,
        np.concatenate([data.labeled.labels, py]),
        np.concatenate([np.ones(len(data.labeled.labels)), np.maximum(pw, 1e-3)]),
        data.num_classes,
        AgreementConfig(k=learning.k, tau=learning.tau, share=share),
        index=index,
    )
    how = f"agreement, class quota {share:.0%} of the pool, {len(pids)} pseudo anchors"
    return SelectionOutcome(result, data.labeled.ids + pids, choice.name, how, index)


def select_for_cycle(
    data: CycleData,
    choice: EmbeddingChoice,
    learning: LearningSettings,
    champion_probs: np.ndarray | None = None,
) -> SelectionOutcome:
    """Calibrated pseudo-labels for the pool from the chosen embedding.

    The classifier side is a logistic regression on the embedding, so its out-of-fold
    probabilities on the human labels are cheap and honest calibration data. The champion
    CNN (``champion_probs``, (n_pool, C)) was trained on those labels, so it cannot be
    calibrated on them; it acts as a second opinion instead: an accepted sample whose label
    the champion disputes goes to review rather than into the training set.
    """
    labels = data.labeled.labels
    # Pseudo-labels the wheel already accepted teach the classifier too (weighted by their
    # confidence); calibration still scores only human labels, each by a model that never
    # saw it.
    pseudo_x, pseudo_y, pseudo_w, _ = pseudo_anchors(data, choice)

    def fit(rows: np.ndarray) -> LogisticRegression:
        x = np.concatenate([choice.labeled[rows], pseudo_x])
        y = np.concatenate([labels[rows], pseudo_y])
        w = np.concatenate([np.ones(len(rows)), pseudo_w])
        return _selection_classifier().fit(x, y, sample_weight=w)

    clf = fit(np.arange(len(labels)))
    pool_probs = _full_probs(clf, choice.pool, data.num_classes)
    min_count = int(np.bincount(labels, minlength=data.num_classes).min())
    if min_count >= 2:
        folds = StratifiedKFold(min(5, min_count), shuffle=True, random_state=learning.seed)
        calib = np.zeros((len(labels), data.num_classes))
        for train_rows, held_out in folds.split(choice.labeled, labels):
            calib[held_out] = _full_probs(
                fit(train_rows), choice.labeled[held_out], data.num_classes
            )
        how = f"{folds.n_splits}-fold out-of-fold on {len(labels)} human labels"
    else:  # one label in some class: no held-out estimate exists, use in-sample (optimistic)
        calib = _full_probs(clf, choice.labeled, data.num_classes)
        how = "in-sample (a class has a single label)"
    if len(pseudo_y):
        how += f"; classifier also trained on {len(pseudo_y)} earlier pseudo-labels"
    cfg = SelectionConfig(
        k=learning.k,
        target_precision=learning.target_precision,
        seed=learning.seed,
        index_kind=learning.index_kind,
    )
    result = select_pseudo_labels(
        choice.pool, pool_probs, choice.labeled, labels, None, calib, None, data.num_classes, cfg
    )
    if champion_probs is not None:
        disputed = (result.decision == Decision.ACCEPTED) & (
            champion_probs.argmax(1) != result.label
        )
        decision = result.decision.copy()
        decision[disputed] = Decision.NEEDS_REVIEW
        counts = dict(result.counts)
        counts["accepted"] = int((decision == Decision.ACCEPTED).sum())
        counts["needs_review"] = int((decision == Decision.NEEDS_REVIEW).sum())
        counts["disputed_by_champion"] = int(disputed.sum())
        result = replace(result, decision=decision, counts=counts)
        how += "; champion agreement required"
    return SelectionOutcome(result, data.labeled.ids, choice.name, how)


def embedding_classifier_probs(data: CycleData, choice: EmbeddingChoice) -> np.ndarray:
    """(n_pool, C) probabilities of a logistic regression on the embedding: the classifier
    opinion when no trained model exists yet."""
    clf = _selection_classifier().fit(choice.labeled, data.labeled.labels)
    return _full_probs(clf, choice.pool, data.num_classes)


def _full_probs(clf: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((len(x), num_classes), dtype=np.float64)
    out[:, clf.classes_] = clf.predict_proba(x)
    return out


def pseudo_label_quality(data: CycleData, result: SelectionResult) -> dict[str, float | None]:
    """Precision of accepted pseudo-labels against the hidden truth, and pool coverage."""
    accepted = result.decision == Decision.ACCEPTED
    known = accepted & (data.pool_truth >= 0)
    n_pool = len(data.pool_ids)
    return {
        "pseudo_precision": float((result.label[known] == data.pool_truth[known]).mean())
        if known.any()
        else None,
        "pseudo_coverage": float(accepted.sum() / n_pool) if n_pool else None,
    }


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
) -> TrainedClassifier:
    """Backbone (from SSL when present) + head on human labels and accepted pseudo-labels.

    ``accepted``: bool (n_pool,) mask of the pool; ``pseudo_labels``/``pseudo_weights``: one
    per accepted sample (class index, selection score). Human labels weigh 1. ``fixmatch``
    adds the consistency term over the whole pool.
    """
    weak, strong = augmentations(learning)
    images = np.concatenate([data.labeled.images, data.pool_images[accepted]])
    labels = np.concatenate([data.labeled.labels, pseudo_labels])
    weights = np.concatenate([np.ones(len(data.labeled.labels)), pseudo_weights])
    cfg = TrainConfig(
        backbone=learning.backbone,
        width=learning.width,
        in_channels=learning.channels,
        epochs=learning.fixmatch_epochs if fixmatch else learning.train_epochs,
        steps_per_epoch=learning.steps_per_epoch,
        batch_size=learning.batch_size,
        weak=weak,
        strong=strong,
        fixmatch=fixmatch,
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
    )


def classifier_probs(model: nn.Module, images: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (N, num_classes) probabilities of a trained ``Classifier`` on uint8 images."""
    if not isinstance(model, Classifier):
        raise TypeError(f"expected a flywheel Classifier, got {type(model).__name__}")
    return TrainedClassifier(model, num_classes, []).predict_proba(images)
