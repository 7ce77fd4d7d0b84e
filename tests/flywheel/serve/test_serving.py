"""Serving applies the model's own input transform, whatever size was uploaded."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from flywheel.config import LearningSettings
from flywheel.serve.serving import LEGACY_INPUT_SIZE, ServingModel, classify, prepare_image


class Recorder(nn.Module):
    """A model that remembers the shape of what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return torch.zeros(x.shape[0], 2)


def big_png(side: int = 1000) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_1000x1000_upload_reaches_the_model_at_its_input_size() -> None:
    model = Recorder()
    tags = {"classes": "a,b", "input_size": "8", "channels": "1", "resize": "crop"}
    serving = ServingModel.from_tags("3", model, tags)
    learning = LearningSettings(image_size=64, channels=3)  # today's settings do not count
    classify(serving, prepare_image(big_png(), serving, learning), top_k=2)
    assert model.shapes == [(1, 1, 8, 8)]


@pytest.mark.parametrize(
    ("tags", "learning", "expected"),
    [
        ({"input_size": "12", "channels": "3"}, LearningSettings(), (12, 12, 3)),
        ({}, LearningSettings(image_size=16, channels=3), (16, 16, 3)),  # an older model
        ({}, LearningSettings(), (LEGACY_INPUT_SIZE, LEGACY_INPUT_SIZE)),  # no size anywhere
    ],
)
def test_input_transform_falls_back_to_the_settings_then_a_fixed_size(
    tags: dict[str, str], learning: LearningSettings, expected: tuple[int, ...]
) -> None:
    serving = ServingModel.from_tags("1", Recorder(), tags)
    image = prepare_image(big_png(), serving, learning)
    assert image.shape == expected and image.dtype == np.uint8


def test_tags_are_read_and_unusable_ones_ignored() -> None:
    good = ServingModel.from_tags(
        "1", Recorder(), {"classes": "x,y", "input_size": "28", "channels": "3", "resize": "pad"}
    )
    assert (good.classes, good.input_size, good.channels, good.resize) == (("x", "y"), 28, 3, "pad")
    bad = ServingModel.from_tags(
        "1", Recorder(), {"input_size": "0", "channels": "2", "resize": "squash"}
    )
    assert (bad.classes, bad.input_size, bad.channels, bad.resize) == ((), None, None, None)
