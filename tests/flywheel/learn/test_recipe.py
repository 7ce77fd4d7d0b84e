"""The cycle's learning glue: what the self-supervised checkpoint is keyed by."""

from pathlib import Path

import numpy as np

from flywheel.config import LearningSettings
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.recipe import train_ssl_backbone

LEARNING = LearningSettings(ssl_epochs=1, width=4, batch_size=8, augment="digits")


def data_with(labeled: list[int], images: np.ndarray) -> CycleData:
    ids = [f"s{i:02d}" for i in range(len(images))]
    pool = [i for i in range(len(images)) if i not in labeled]
    return CycleData(
        classes=["a", "b"],
        labeled=LabeledSet(
            [ids[i] for i in labeled], images[labeled], np.zeros(len(labeled), np.int64)
        ),
        test=LabeledSet([], images[:0], np.zeros(0, np.int64)),
        pool_ids=[ids[i] for i in pool],
        pool_images=images[pool],
        pool_current={},
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
    assert len(list(tmp_path.iterdir())) == 1  # one checkpoint folder for the same pool
    other = images.copy()
    other[3] = 255 - other[3]
    retrained = train_ssl_backbone(data_with([0, 1], other), LEARNING, tmp_path / "o")
    assert retrained is not None and retrained.resumed_from_epoch == 0


def test_class_balanced_weights_give_every_class_the_same_total() -> None:
    from flywheel.learn.recipe import class_balanced

    labels = np.array([0, 0, 0, 1, 2, 2])
    weights = np.array([1.0, 1.0, 0.5, 1.0, 0.5, 0.5])
    # totals [2.5, 1, 1] -> mean 1.5 -> scales [0.6, 1.5, 1.5]
    out = class_balanced(labels, weights)
    np.testing.assert_allclose(out, [0.6, 0.6, 0.3, 1.5, 0.75, 0.75])
    np.testing.assert_allclose(np.bincount(labels, weights=out), [1.5, 1.5, 1.5])
