"""What a cycle learns from: the current labels, the pool and the frozen test split.

Reads the database and decodes the images once, into uint8 arrays the learning code takes.
Human-made labels (``seed``, ``human``, ``feedback``) are the ground the wheel stands on;
``pseudo`` labels are the wheel's own previous output and are re-decided every cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from flywheel.blobstore import BlobStore
from flywheel.db import Database, GroundTruth, Label, Sample
from flywheel.db.models import LabelSource, Split
from flywheel.errors import InvalidInputError
from flywheel.images import decode_image

HUMAN_SOURCES = (LabelSource.SEED.value, LabelSource.HUMAN.value, LabelSource.FEEDBACK.value)


@dataclass
class LabeledSet:
    ids: list[str]
    images: np.ndarray  # uint8 (N, H, W) or (N, H, W, C)
    labels: np.ndarray  # int64 (N,) class indices into CycleData.classes


@dataclass
class CycleData:
    classes: list[str]
    labeled: LabeledSet  # human-made labels outside the test split
    test: LabeledSet  # the frozen evaluation set
    pool_ids: list[str]  # samples without a human-made label (pseudo-labeled or not)
    pool_images: np.ndarray
    pool_current: dict[str, tuple[str, float]]  # pool sample -> its current pseudo label, conf
    pool_truth: np.ndarray  # int64 (n_pool,) hidden truth class index, -1 where unknown

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_images(blobs: BlobStore, ids: list[str], size: int | None, channels: int) -> np.ndarray:
    """Decode ``ids`` to one uint8 array: (N, H, W) for 1 channel, (N, H, W, 3) for 3.

    ``size`` resizes to size x size (bilinear); None requires all images to share a size.
    """
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for sid in ids:
        img = decode_image(blobs.get(sid), mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(img, dtype=np.uint8))
    if not arrays:
        shape = (0, size or 1, size or 1) + (() if channels == 1 else (3,))
        return np.zeros(shape, dtype=np.uint8)
    if len({a.shape for a in arrays}) > 1:
        raise InvalidInputError(
            "images have different sizes: set learning.image_size to resize them"
        )
    return np.stack(arrays)


def load_cycle_data(
    db: Database, blobs: BlobStore, image_size: int | None, channels: int
) -> CycleData:
    newest = select(func.max(Label.id)).group_by(Label.sample_id).scalar_subquery()
    with db.session() as s:
        current = {
            lab.sample_id: lab
            for lab in s.scalars(
                select(Label).where(Label.id.in_(newest), Label.retracted.is_(False))
            )
        }
        samples = s.execute(select(Sample.id, Sample.split).order_by(Sample.id)).all()
        truth = dict(s.execute(select(GroundTruth.sample_id, GroundTruth.label)).all())
    human = {sid: lab for sid, lab in current.items() if lab.source in HUMAN_SOURCES}
    classes = sorted({lab.label for lab in human.values()})
    if len(classes) < 2:
        raise InvalidInputError("a cycle needs human-made labels of at least two classes")
    index = {c: i for i, c in enumerate(classes)}

    labeled_ids, test_ids, pool_ids = [], [], []
    for sid, split in samples:
        if split == Split.TEST:
            if sid in human:
                test_ids.append(sid)
        elif sid in human:
            labeled_ids.append(sid)
        else:
            pool_ids.append(sid)
    if not test_ids:
        raise InvalidInputError("a cycle needs a labeled test split to judge models on")

    def labeled_set(ids: list[str]) -> LabeledSet:
        return LabeledSet(
            ids,
            load_images(blobs, ids, image_size, channels),
            np.array([index[human[i].label] for i in ids], dtype=np.int64),
        )

    pool_current = {
        sid: (current[sid].label, float(current[sid].confidence))
        for sid in pool_ids
        if sid in current
    }
    return CycleData(
        classes=classes,
        labeled=labeled_set(labeled_ids),
        test=labeled_set(test_ids),
        pool_ids=pool_ids,
        pool_images=load_images(blobs, pool_ids, image_size, channels),
        pool_current=pool_current,
        pool_truth=np.array([index.get(truth.get(i, ""), -1) for i in pool_ids], dtype=np.int64),
    )
