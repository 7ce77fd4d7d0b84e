"""Real-image data sets for the generalization suite, built only from images that ship
inside installed packages (scikit-image's ``skimage.data`` and scikit-learn's sample
photos), so nothing is downloaded and every machine builds the same arrays.

- ``digits``: sklearn's 1,797 8x8 grey digit scans, 10 classes (the smoke test);
- ``gray-patches32``: 32x32 grey patches cut from 10 photographs (camera, moon, coins,
  page, text, brick, grass, gravel, clock, cell); the class is the photograph;
- ``rgb-patches48``: 48x48 colour patches cut from 9 photographs (astronaut, chelsea,
  coffee, hubble, immunohistochemistry, retina, rocket, and sklearn's china and flower);
- ``faces25``: skimage's LFW subset, 100 25x25 grey faces against 100 non-faces.

Patches are uniform random crops; near-flat ones (grey-level spread under ``MIN_SPREAD``)
are skipped, so no patch is a blank that could belong to any class. The protocol is the one
of BENCHMARKS §1 with a frozen test split: :func:`split`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.digits import digits_uint8

FROZEN_SEED = 20261202  # the test split and the patches never move with a run's seed
PATCHES_PER_CLASS = 240  # ~1,700 pool and 720 test images for 10 classes
MIN_SPREAD = 8.0  # grey-level standard deviation below which a patch is blank


@dataclass(frozen=True)
class ImageSet:
    name: str
    images: np.ndarray  # uint8 (N, H, W) grey or (N, H, W, 3) colour
    labels: np.ndarray  # int64 (N,) class index
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return 3 if self.images.ndim == 4 else 1


@dataclass(frozen=True)
class Split:
    """Positions into the set: seed labels, the unlabeled pool (truth hidden), the test."""

    labeled: np.ndarray
    pool: np.ndarray
    test: np.ndarray


def _patches(name: str, photos: dict[str, np.ndarray], size: int) -> ImageSet:
    rng = np.random.default_rng(FROZEN_SEED)
    images, labels = [], []
    for cls, photo in enumerate(photos.values()):
        kept = 0
        while kept < PATCHES_PER_CLASS:
            y = rng.integers(0, photo.shape[0] - size + 1)
            x = rng.integers(0, photo.shape[1] - size + 1)
            patch = photo[y : y + size, x : x + size]
            if patch.std() >= MIN_SPREAD:
                images.append(patch)
                labels.append(cls)
                kept += 1
    return ImageSet(name, np.stack(images), np.array(labels, np.int64), tuple(photos))


def digits() -> ImageSet:
    images, labels = digits_uint8()
    return ImageSet("digits", images, labels, tuple(str(c) for c in range(10)))


def gray_patches() -> ImageSet:
    from skimage import data

    names = ("camera", "moon", "coins", "page", "text", "brick", "grass", "gravel", "clock")
    photos = {n: getattr(data, n)() for n in names}
    photos["cell"] = data.cell()
    return _patches("gray-patches32", photos, 32)


def rgb_patches() -> ImageSet:
    from skimage import data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry")
    photos = {n: getattr(data, n)() for n in (*names, "retina", "rocket")}
    samples = load_sample_images()
    for path, photo in zip(samples.filenames, samples.images, strict=True):
        photos[path.rsplit("/", 1)[-1].removesuffix(".jpg")] = photo
    return _patches("rgb-patches48", photos, 48)


def faces() -> ImageSet:
    from skimage import data

    pixels = np.round(data.lfw_subset() * 255).astype(np.uint8)  # 100 faces, then 100 not
    labels = np.repeat(np.arange(2, dtype=np.int64), len(pixels) // 2)
    return ImageSet("faces25", pixels, labels, ("face", "other"))


SETS: dict[str, Callable[[], ImageSet]] = {
    "digits": digits,
    "gray-patches32": gray_patches,
    "rgb-patches48": rgb_patches,
    "faces25": faces,
}


def split(s: ImageSet, labels_per_class: int, seed: int, test_fraction: float = 0.3) -> Split:
    """A frozen stratified test split (the same for every seed), then ``labels_per_class``
    seed labels per class drawn from the rest with ``seed``; the others form the pool."""
    frozen = np.random.default_rng(FROZEN_SEED)
    test, rest = [], []
    for c in range(len(s.classes)):
        members = frozen.permutation(np.flatnonzero(s.labels == c))
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        rest.append(members[n_test:])
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.choice(r, labels_per_class, replace=False) for r in rest])
    pool = np.setdiff1d(np.concatenate(rest), labeled)
    return Split(np.sort(labeled), pool, np.sort(np.concatenate(test)))
