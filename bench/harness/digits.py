"""sklearn's digits as the benchmarks use them: as the project stores them (uint8 pixels,
``round(x * 255 / 16)``) or scaled to 0..1, split the way every learning benchmark splits
them (30 % stratified test, ``random_state=seed``; N labels per class drawn from the pool
with the same seed), and as PNG files for ingest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) uint8, labels int64): what ingest stores for the digits."""
    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def digits_scaled() -> tuple[np.ndarray, np.ndarray]:
    """(features (1797, 64) in 0..1, labels): the pixels as a classical model takes them."""
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def pool_test_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, test) indices: a 30 % test split stratified by class."""
    pool, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    return pool, test


def draw_labels(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Positions in ``y`` of ``n`` samples per class, drawn without replacement with
    ``seed``: the labels a user gives before the first cycle."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), n, replace=False) for c in range(NUM_CLASSES)]
    )


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 ``pixels``: grey (H, W) or colour (H, W, 3)."""
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def write_image_folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` distinct 8x8 PNGs in class folders under ``root``: real digit scans (cycled)
    with a little noise, so no two files are the same."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for i in range(n):
        j = i % len(digits.images)
        pixels = digits.images[j] * (255 / 16) + rng.normal(0, 4, (8, 8))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
        folder = root / str(digits.target[j])
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:07d}.png")
