"""Which champion a cycle's model continues from: only one that takes the same classes,
input and architecture; anything else starts from the SSL backbone."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from flywheel.config import LearningSettings
from flywheel.cycle.steps.train import warm_start_model
from flywheel.learn.backbones import Classifier, build_backbone
from flywheel.learn.data import CycleData, LabeledSet, ModelInput
from flywheel.learn.registry import ModelVersion, classes_tag
from flywheel.learn.sample_rows import PoolLabels

CLASSES = ["a", "b"]
INPUT = ModelInput(32, 1, "stretch")


def data(spec: ModelInput = INPUT) -> CycleData:
    images = np.zeros((2, spec.size, spec.size), np.uint8)
    labeled = LabeledSet(["x", "y"], images, np.array([0, 1]))
    none = PoolLabels.of([], {}, CLASSES)
    return CycleData(CLASSES, labeled, labeled, [], images[:0], none, np.zeros(0, int), spec)


def champion(classes: list[str] = CLASSES, spec: ModelInput = INPUT) -> ModelVersion:
    tags = {**classes_tag(classes), **spec.tags()}
    return ModelVersion("3", None, ("champion",), tags, datetime.now(UTC))


def model(width: int = 8, stride: int = 2, classes: int = 2) -> Classifier:
    return Classifier(build_backbone("small_cnn", 1, None, width, stride), classes)


LEARNING = LearningSettings(width=8)


def test_the_champion_is_continued_when_everything_fits() -> None:
    m = model()
    assert warm_start_model(champion(), m, data(), LEARNING) is m


def test_anything_that_does_not_fit_starts_from_ssl() -> None:
    m = model()
    assert warm_start_model(None, None, data(), LEARNING) is None
    assert (
        warm_start_model(champion(), m, data(), LEARNING.model_copy(update={"warm_start": False}))
        is None
    )
    assert warm_start_model(champion(["a", "c"]), m, data(), LEARNING) is None  # other classes
    other = ModelInput(16, 1, "stretch")
    assert warm_start_model(champion(spec=other), m, data(), LEARNING) is None  # other input
    assert warm_start_model(champion(), model(width=16), data(), LEARNING) is None  # wider
    assert (
        warm_start_model(champion(), model(stride=1), data(), LEARNING) is not None
    )  # same shapes
