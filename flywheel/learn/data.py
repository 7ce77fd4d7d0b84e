"""What a cycle learns from: the current labels, the pool and the frozen test split.

Reads the database and the images, every image brought to the model's input size
(``ModelInput``): the human-labeled ones into uint8 arrays, the pool as a ``BlobImages``
that reads from the store as it is used, so no step holds the pool's pixels. Human-made labels
(``seed``, ``human``, ``feedback``) are the ground the wheel stands on; ``pseudo`` labels are
the wheel's own previous output and are re-decided every cycle.

A sample whose bytes cannot be used (vanished blob, checksum mismatch, undecodable) is
quarantined (``flywheel.store.quarantine``) and left out: no single sample can fail a cycle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import select

from flywheel.db import Database, Sample
from flywheel.errors import InvalidInputError
from flywheel.learn.pool_images import DEFAULT_CACHE_BYTES, BlobImages, ImageSource
from flywheel.learn.sample_rows import PoolLabels, scan_samples
from flywheel.store import quarantine
from flywheel.store.blobs import READ_BATCH, BlobStore, unusable_reason
from flywheel.store.id_index import IdIndex
from flywheel.store.images import to_model_input

# The largest derived input size: the usual ImageNet input, for projects of large photos.
MAX_DERIVED_SIZE = 224
MAX_REASON = 300  # characters of a decoder's message kept in a quarantine reason


@dataclass(frozen=True)
class ModelInput:
    """What a model takes: a ``size`` x ``size`` image of ``channels``, other shapes brought
    to it by the ``resize`` policy. Recorded with the cycle and as the model's tags."""

    size: int
    channels: int
    resize: str

    def as_dict(self) -> dict[str, Any]:
        return {"input_size": self.size, "channels": self.channels, "resize": self.resize}

    def tags(self) -> dict[str, str]:
        """The registered model's tags ``input_size``, ``channels``, ``resize``."""
        return {k: str(v) for k, v in self.as_dict().items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ModelInput | None:
        """From ``as_dict`` or ``tags`` output; None when they are absent (older records)."""
        if not d or not {"input_size", "channels", "resize"} <= d.keys():
            return None
        return cls(int(d["input_size"]), int(d["channels"]), str(d["resize"]))


def derive_input_size(dims: Iterable[tuple[int, int]]) -> int:
    """The square side for ``learning.image_size: null``: the longer side of the most
    common (width, height), so the typical image keeps every pixel; ties go to the smaller
    shape. A few odd-sized uploads cannot move it. Photos larger than
    ``MAX_DERIVED_SIZE`` are brought down to it: a model's input, not the camera's, sets
    the memory a cycle needs (set ``learning.image_size`` for more)."""
    counts = Counter(dims)
    if not counts:
        raise InvalidInputError("no samples to learn from")
    (w, h), _ = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return min(max(w, h), MAX_DERIVED_SIZE)


def sample_input_size(db: Database, ids: list[str]) -> int:
    """``derive_input_size`` over the stored sizes of ``ids``."""
    with db.session() as s:
        dims = s.execute(select(Sample.width, Sample.height).where(Sample.id.in_(ids))).all()
    return derive_input_size((w, h) for w, h in dims)


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
    pool_ids: Sequence[str]  # without a human-made label (pseudo-labeled or not): SampleIds
    # A BlobImages, read from the store as used (flywheel.learn.pool_images); an array works.
    pool_images: ImageSource
    pool_current: PoolLabels  # the pool's current pseudo-labels, aligned with pool_ids
    pool_truth: np.ndarray  # int64 (n_pool,) hidden truth class index, -1 where unknown
    input: ModelInput | None = None  # what every image above was brought to

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def decode_or_reason(data: bytes, spec: ModelInput) -> np.ndarray | str:
    """The bytes as model input, or why they cannot be used."""
    try:
        return to_model_input(data, spec.size, spec.channels, spec.resize)
    except Exception as exc:  # decoding bytes in memory fails only because of the bytes
        return f"undecodable image: {type(exc).__name__}: {exc}"[:MAX_REASON]


def _read_checked(
    blobs: BlobStore, ids: list[str], spec: ModelInput
) -> Iterator[tuple[str, np.ndarray | str]]:
    """(id, model input or why not) for each of ``ids``, read in parallel batches."""
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        for sid, got in zip(batch, blobs.get_many(batch), strict=True):
            reason = unusable_reason(got)
            yield sid, reason if reason is not None else decode_or_reason(got, spec)


def image_shape(spec: ModelInput) -> tuple[int, ...]:
    return (spec.size, spec.size) + (() if spec.channels == 1 else (3,))


def load_images(
    blobs: BlobStore, ids: list[str], spec: ModelInput
) -> tuple[np.ndarray, dict[str, str]]:
    """Decode ``ids`` to one uint8 array: (N, S, S) for 1 channel, (N, S, S, 3) for 3.

    Returns the images of the usable ids, in order, and ``{id: reason}`` for the others.
    """
    out = np.empty((len(ids), *image_shape(spec)), dtype=np.uint8)  # filled in place
    failed: dict[str, str] = {}
    kept = 0
    for sid, got in _read_checked(blobs, ids, spec):
        if isinstance(got, str):
            failed[sid] = got
        else:
            out[kept] = got
            kept += 1
    return out[:kept], failed


def pool_source(blobs: BlobStore, ids: list[str], spec: ModelInput, cache_bytes: int) -> BlobImages:
    """``ids`` as images brought to ``spec``, read when used (nothing is read here)."""
    decode = partial(to_model_input, size=spec.size, channels=spec.channels, policy=spec.resize)
    return BlobImages(blobs, ids, image_shape(spec), decode, cache_bytes)


def stream_pool(
    blobs: BlobStore, ids: list[str], spec: ModelInput, cache_bytes: int
) -> tuple[BlobImages, dict[str, str]]:
    """The pool as a ``BlobImages`` of its usable ids, and ``{id: reason}`` for the others.

    Every image is read and decoded once here, so that a bad one is found before learning
    starts; the decoded images fill the cache up to ``cache_bytes`` and are then dropped:
    memory stays bounded, whatever the pool's size."""
    failed: dict[str, str] = {}
    pool = pool_source(blobs, [], spec, cache_bytes)
    for sid, got in _read_checked(blobs, ids, spec):
        if isinstance(got, str):
            failed[sid] = got
        else:
            pool.remember(sid, got)
            pool.ids.append(sid)
    return pool, failed


def _classes(human: Mapping[str, str], test_ids: list[str]) -> list[str]:
    """The classes to learn; the only reasons left for a cycle to fail are these."""
    classes = sorted(set(human.values()))
    if len(classes) < 2:
        raise InvalidInputError("a cycle needs human-made labels of at least two classes")
    if not test_ids:
        raise InvalidInputError("a cycle needs a labeled test split to judge models on")
    return classes


def load_cycle_data(
    db: Database,
    blobs: BlobStore,
    image_size: int | None,
    channels: int,
    *,
    resize: str = "stretch",
    cycle_id: int | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    planned_pool: IdIndex | Collection[str] | None = None,
) -> CycleData:
    """The cycle's samples, minus quarantined ones, at ``image_size`` (None: derived by
    ``derive_input_size`` from the samples used). Unusable samples found now are
    quarantined under ``cycle_id`` and left out. The human-labeled images are decoded into
    arrays; the pool is a ``BlobImages`` whose decoded cache holds at most ``cache_bytes``.

    ``planned_pool``: the pool an earlier step of the cycle planned. The pool is then
    those of its ids still without a human label. No pool image is read here: at a million
    images one process would read them all. They are read when used, and a lost one raises
    ``UnreadableSampleError`` there (``stream_pool`` checks a pool in one pass)."""
    if planned_pool is not None and not isinstance(planned_pool, IdIndex):
        planned_pool = IdIndex(list(planned_pool))
    rows = scan_samples(db, planned_pool)
    groups, human = rows.groups, rows.human
    _classes(human, groups["test"])  # fail before decoding anything
    spec = ModelInput(image_size or derive_input_size(rows.dims.elements()), channels, resize)

    images: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    for group in ("labeled", "test"):  # human-labeled: few, and read by every step
        images[group], bad = load_images(blobs, groups[group], spec)
        failed.update(bad)
    rows.drop(failed)
    quarantine.record(db, failed, cycle_id)
    classes = _classes(human, groups["test"])
    index = {c: i for i, c in enumerate(classes)}

    def labeled_set(group: str) -> LabeledSet:
        ids = groups[group]
        labels = np.array([index[human[i]] for i in ids], dtype=np.int64)
        return LabeledSet(ids, images[group], labels)

    current, truth = rows.pool_labels(classes)
    return CycleData(
        classes=classes,
        labeled=labeled_set("labeled"),
        test=labeled_set("test"),
        pool_ids=rows.pool,
        pool_images=pool_source(blobs, rows.pool, spec, cache_bytes),
        pool_current=current,
        pool_truth=truth,
        input=spec,
    )
