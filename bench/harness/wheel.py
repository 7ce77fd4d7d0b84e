"""Turning the real wheel on an image set in a scratch project, and the learning baselines
every learning benchmark compares it with, on the same split in the same run."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from sklearn.semi_supervised import LabelSpreading

from flywheel.config import LearningSettings, Settings
from flywheel.cycle.runner import run_cycle
from flywheel.db.models import CycleState
from flywheel.learn.backbones import stem_stride_for
from flywheel.learn.recipe import augmentations, classifier_probs
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.training import TrainConfig, train_classifier
from flywheel.store.ingest import Candidate, ingest_candidates
from flywheel.workspace import open_workspace
from harness.digits import png_bytes
from harness.workspaces import scratch


def run_flywheel(
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    parts: dict[str, np.ndarray],
    learning: LearningSettings,
    cycles: int,
) -> dict[str, Any]:
    """Ingest ``parts`` ("train": seed labels, "test", "pool": truth kept aside as hidden
    truth) and run ``cycles`` cycles; per cycle its metrics, and the champion's accuracy."""
    cands = [
        Candidate(f"{part}/{i}", lambda i=i: png_bytes(images[i]), classes[labels[i]], part)
        for part in ("train", "test", "pool")
        for i in parts[part]
    ]
    with scratch() as tmp:
        settings = Settings(data_dir=tmp, learning=learning)
        ws = open_workspace(settings)
        ingest_candidates(ws.db, ws.blobs, cands, "bench", settings.ingest)
        ws.versions.snapshot("seed")
        registry = ModelRegistry.from_settings(settings)
        per_cycle = []
        for _ in range(cycles):
            started = time.perf_counter()
            r = run_cycle(ws, registry, learning)
            per_cycle.append(
                {
                    "test_accuracy": r.metrics["test_accuracy"],
                    "pseudo_precision": r.metrics["pseudo_precision"],
                    "pseudo_coverage": r.metrics["pseudo_coverage"],
                    "promoted": r.state == CycleState.PROMOTED,
                    "embedding": r.metrics["embedding"],
                    "started_from": r.metrics.get("started_from"),
                    "accepted": r.metrics["accepted"],
                    "needs_review": r.metrics["needs_review"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            profile = r.metrics["profile"]
            print(json.dumps({"cycle": len(per_cycle), **per_cycle[-1]}), flush=True)
        ws.close()
    # The champion serves predictions: the last model the gate promoted (the first always is).
    champion = [c for c in per_cycle if c["promoted"]][-1]
    return {
        "champion_accuracy": champion["test_accuracy"],
        "cycles": per_cycle,
        "profile": profile,
    }


def supervised_accuracy(
    images: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    learning: LearningSettings,
    num_classes: int,
) -> float:
    """Flywheel's own classifier trained on ``train`` alone (no pool), on ``test``, with
    the augmentation preset in ``learning`` (give the one the wheel's profile chose)."""
    weak, strong = augmentations(learning)
    cfg = TrainConfig(
        backbone=learning.backbone,
        width=learning.width,
        in_channels=3 if images.ndim == 4 else 1,
        stem_stride=stem_stride_for(images.shape[1]),
        epochs=learning.train_epochs,
        batch_size=learning.batch_size,
        weak=weak,
        strong=strong,
        seed=learning.seed,
    )
    trained = train_classifier(images[train], labels[train], None, cfg, num_classes)
    probs = classifier_probs(trained.model, images[test], num_classes)
    return float((probs.argmax(1) == labels[test]).mean())


def label_spreading_accuracy(
    images: np.ndarray, labels: np.ndarray, labeled: np.ndarray, pool: np.ndarray, test: np.ndarray
) -> float:
    """sklearn's ``LabelSpreading(kernel="knn")`` on pixels (0..1), transductive on the pool."""
    x = images.reshape(len(images), -1) / 255.0
    train = np.concatenate([labeled, pool])
    y = np.full(len(train), -1)
    y[: len(labeled)] = labels[labeled]
    model = LabelSpreading(kernel="knn", n_neighbors=7, max_iter=1000).fit(x[train], y)
    return float((model.predict(x[test]) == labels[test]).mean())
