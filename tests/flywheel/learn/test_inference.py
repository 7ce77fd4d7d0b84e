import numpy as np
import torch

from flywheel.learn.inference import rows_by_batch


def mean_and_max(xb: torch.Tensor) -> torch.Tensor:
    """Two features per image: its mean and its max, over every channel and pixel."""
    flat = xb.flatten(1)
    return torch.stack([flat.mean(1), flat.amax(1)], dim=1)


def test_rows_by_batch_fills_one_row_per_image_across_batch_edges():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 4, 4), dtype=np.uint8)
    got = rows_by_batch(mean_and_max, images, torch.device("cpu"), batch_size=3)
    scaled = images.reshape(7, -1) / 255.0  # the reference, by hand
    want = np.stack([scaled.mean(1), scaled.max(1)], axis=1)
    assert got.dtype == np.float32 and got.shape == (7, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_an_empty_input_gives_the_forwards_width():
    images = np.zeros((0, 4, 4, 3), dtype=np.uint8)
    got = rows_by_batch(mean_and_max, images, torch.device("cpu"))
    assert got.shape == (0, 2) and got.dtype == np.float32
