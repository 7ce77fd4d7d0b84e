"""Images read for learning reach the model's input size by the configured resize policy.

The images are chosen so each policy's answer can be computed by hand: a scale factor of 1
along an axis leaves it untouched, and a constant row stays constant when resampled.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flywheel.learn.data import ModelInput, load_images
from flywheel.store.blobs import BlobStore


def png(pixels: list[list[int]], mode: str = "L") -> bytes:
    img = Image.fromarray(np.array(pixels, dtype=np.uint8), mode="L").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


WIDE_ROWS = [[10, 10, 10, 10], [200, 200, 200, 200]]  # 4 wide, 2 high
WIDE_COUNT = [[1, 2, 3, 4], [5, 6, 7, 8]]
WIDE_FLAT = [[90] * 4] * 2
TALL_FLAT = [[90] * 2] * 4  # 2 wide, 4 high


@pytest.mark.parametrize(
    ("policy", "pixels", "expected"),
    [
        # Both sides to 2: the width halves, each constant row stays itself.
        ("stretch", WIDE_ROWS, [[10, 10], [200, 200]]),
        # The short side (2) is already 2: no scaling; the centre 2 of 4 columns are kept.
        ("crop", WIDE_COUNT, [[2, 3], [6, 7]]),
        # The long side to 2 gives 2x1, pasted at the top ((2 - 1) // 2 = 0) on black.
        ("pad", WIDE_FLAT, [[90, 90], [0, 0]]),
        ("pad", TALL_FLAT, [[90, 0], [90, 0]]),
    ],
)
def test_each_policy_gives_the_hand_computed_array(
    tmp_path: Path, policy: str, pixels: list[list[int]], expected: list[list[int]]
) -> None:
    blobs = BlobStore(str(tmp_path))
    sid = blobs.put(png(pixels)).sha256
    images, failed = load_images(blobs, [sid], ModelInput(2, 1, policy))
    assert failed == {}
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, np.array([expected], dtype=np.uint8))


def test_three_channels_keep_the_policy(tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path))
    sid = blobs.put(png(WIDE_FLAT, "RGB")).sha256
    images, _ = load_images(blobs, [sid], ModelInput(2, 3, "pad"))
    assert images.shape == (1, 2, 2, 3)
    np.testing.assert_array_equal(images[0, :, :, 0], [[90, 90], [0, 0]])


def test_images_of_several_sizes_come_out_at_one_size(tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path))
    ids = [blobs.put(png(p)).sha256 for p in (WIDE_FLAT, TALL_FLAT, [[7] * 2] * 2)]
    for policy in ("stretch", "crop", "pad"):
        images, failed = load_images(blobs, ids, ModelInput(2, 1, policy))
        assert images.shape == (3, 2, 2) and failed == {}
        np.testing.assert_array_equal(images[2], [[7, 7], [7, 7]])  # already 2x2: untouched
