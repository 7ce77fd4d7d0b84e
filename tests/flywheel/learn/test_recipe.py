"""The cycle's learning glue: what the self-supervised checkpoint is keyed by."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flywheel.config import LearningSettings
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.recipe import train_ssl_backbone
from flywheel.learn.sample_rows import PoolLabels

LEARNING = LearningSettings(ssl_epochs=1, width=4, batch_size=8, augment="digits")


def data_with(
    labeled: list[int],
    images: np.ndarray,
    ids: list[str] | None = None,
    streamed: Callable[[list[str]], Any] | None = None,
) -> CycleData:
    """Labeled rows ``labeled``, the rest pool; ``streamed(pool_ids)`` gives the pool's
    images (a BlobImages) instead of the array's rows."""
    ids = ids or [f"s{i:02d}" for i in range(len(images))]
    pool = [i for i in range(len(images)) if i not in labeled]
    pool_ids = [ids[i] for i in pool]
    return CycleData(
        classes=["a", "b"],
        labeled=LabeledSet(
            [ids[i] for i in labeled], images[labeled], np.zeros(len(labeled), np.int64)
        ),
        test=LabeledSet([], images[:0], np.zeros(0, np.int64)),
        pool_ids=pool_ids,
        pool_images=streamed(pool_ids) if streamed else images[pool],
        pool_current=PoolLabels.of(pool_ids, {}, ["a", "b"]),
        pool_truth=np.full(len(pool), -1),
    )


def test_a_sample_that_gets_a_label_keeps_the_ssl_checkpoint(tmp_path: Path) -> None:
    """SSL never sees labels: labeling a pool sample (feedback, review) must reuse the
    finished checkpoint, not refuse it as 'written for other images'."""
    images = np.random.default_rng(0).integers(0, 255, (16, 8, 8), dtype=np.uint8)
    first = train_ssl_backbone(data_with([0, 1], images), LEARNING, tmp_path)
    assert first is not None and first.resumed_from_epoch == 0
    again = train_ssl_backbone(data_with([0, 1, 7], images), LEARNING, tmp_path)
    assert again is not None and again.resumed_from_epoch == LEARNING.ssl_epochs
    runs = [p for p in tmp_path.iterdir() if p.name != "lineage"]
    assert len(runs) == 1  # one checkpoint folder for the same pool
    other = images.copy()
    other[3] = 255 - other[3]
    retrained = train_ssl_backbone(data_with([0, 1], other), LEARNING, tmp_path / "o")
    assert retrained is not None and retrained.resumed_from_epoch == 0


def test_a_grown_pool_continues_the_ssl_model_for_the_new_samples_budget(
    tmp_path: Path, monkeypatch
) -> None:
    from flywheel.learn import recipe

    starts: list[dict | None] = []
    real = recipe.train_ssl

    def spy(*args, **kwargs):
        starts.append(args[5] if len(args) > 5 else None)  # init_model_state
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "train_ssl", spy)
    images = np.random.default_rng(0).integers(0, 255, (24, 8, 8), dtype=np.uint8)
    learning = LEARNING.model_copy(update={"ssl_epochs": 3})
    first = train_ssl_backbone(data_with([0, 1], images[:20]), learning, tmp_path)
    assert first is not None and first.run is not None
    assert first.run["epochs"] == 3 and first.run["parent"] is None
    assert first.run["samples_seen"] == 3 * 20
    grown = train_ssl_backbone(data_with([0, 1], images), learning, tmp_path)
    assert grown is not None and grown.run is not None
    # 4 new samples x 3 views each = 12 views, spent as whole epochs over 24: one epoch
    assert grown.run["parent"] == first.run["key"] and grown.run["epochs"] == 1
    assert grown.run["samples_seen"] == 3 * 20 + 1 * 24
    assert len(grown.losses) == 1 and grown.resumed_from_epoch == 0
    # it started from the first run's whole model (backbone, projector, method head)
    assert starts[0] is None and starts[1] is not None
    for key, value in first.backbone.state_dict().items():
        assert torch.equal(starts[1][f"backbone.{key}"], value)
    # it continued: one epoch from the first model, not from random weights
    # the same pool again (the train step): the same run, finished, not trained again
    again = train_ssl_backbone(data_with([0, 1, 5], images), learning, tmp_path)
    assert again is not None and again.run == grown.run and again.resumed_from_epoch == 1


def test_a_later_step_gets_the_planned_run_even_if_the_lineage_moved_on(tmp_path: Path) -> None:
    from flywheel.learn.ssl.lineage import SSLRun

    images = np.random.default_rng(1).integers(0, 255, (24, 8, 8), dtype=np.uint8)
    first = train_ssl_backbone(data_with([0, 1], images[:20]), LEARNING, tmp_path)
    assert first is not None and first.run is not None
    train_ssl_backbone(data_with([0, 1], images), LEARNING, tmp_path)  # another cycle grew it
    planned = SSLRun(**first.run)
    replay = train_ssl_backbone(data_with([0, 1], images[:20]), LEARNING, tmp_path, run=planned)
    assert replay is not None and replay.run == first.run
    assert replay.resumed_from_epoch == LEARNING.ssl_epochs  # its finished checkpoint


def test_class_balanced_weights_give_every_class_the_same_total() -> None:
    from flywheel.learn.recipe import class_balanced

    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = np.array([1.0, 1.0, 0.5, 1.0, 0.5, 0.5])
    # totals [2.5, 1, 1] -> mean 1.5 -> scales [0.6, 1.5, 1.5]
    out = class_balanced(labels, weights)
    np.testing.assert_allclose(out, [0.6, 0.6, 0.3, 1.5, 0.75, 0.75])
    np.testing.assert_allclose(np.bincount(labels, weights=out), [1.5, 1.5, 1.5])


def test_a_continuation_whose_parent_is_not_on_this_node_trains_afresh(tmp_path: Path) -> None:
    import shutil

    images = np.random.default_rng(2).integers(0, 255, (24, 8, 8), dtype=np.uint8)
    first = train_ssl_backbone(data_with([0, 1], images[:20]), LEARNING, tmp_path)
    assert first is not None and first.run is not None
    shutil.rmtree(tmp_path / first.run["key"])  # another node's cache had it
    grown = train_ssl_backbone(data_with([0, 1], images), LEARNING, tmp_path)
    assert grown is not None and grown.run is not None
    assert grown.run["parent"] is None and grown.run["epochs"] == LEARNING.ssl_epochs


def test_a_labeled_sample_keeps_the_checkpoint_when_the_pool_is_streamed(tmp_path: Path) -> None:
    """As in a cycle, the pool is read from the blob store (BlobImages), the labeled images
    are an array: moving a sample between them must not rename the SSL images."""
    import io
    from functools import partial

    from PIL import Image

    from flywheel.learn.pool_images import BlobImages
    from flywheel.store.blobs import BlobStore
    from flywheel.store.images import to_model_input

    images = np.random.default_rng(3).integers(0, 255, (16, 8, 8), dtype=np.uint8)
    blobs = BlobStore(str(tmp_path / "store"))

    def png(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return buf.getvalue()

    ids = [blobs.put(png(p)).sha256 for p in images]
    decode = partial(to_model_input, size=8, channels=1, policy="stretch")

    def streamed(labeled: list[int]) -> CycleData:
        return data_with(labeled, images, ids, lambda pool: BlobImages(blobs, pool, (8, 8), decode))

    first = train_ssl_backbone(streamed([0, 1]), LEARNING, tmp_path / "cache")
    assert first is not None and first.resumed_from_epoch == 0
    again = train_ssl_backbone(streamed([0, 1, 7]), LEARNING, tmp_path / "cache")
    assert again is not None and again.resumed_from_epoch == LEARNING.ssl_epochs
