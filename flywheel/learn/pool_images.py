"""The pool's images, read from the blob store when they are used, not held in one array.

``BlobImages`` stands where a uint8 (N, H, W[, C]) array stood: ``len``, ``shape``, an int
gives one image, a slice gives a stacked array (a batch), and a boolean mask or an index
array gives a lazy subset. Images are fetched in parallel batches (``BlobStore.get_many``)
and decoded to the cycle's ``ModelInput``. Decoded images are kept in a cache of bounded
size, least recently used out first, so a pool that fits in ``cache_bytes`` is decoded once
per process, and a pool of millions costs that much memory, not its size.

``torch_view`` turns either kind into what the training loops index: a uint8 (N, C, H, W)
tensor for an array, a view converting image by image for a ``BlobImages``. Pickled into a
DataLoader worker, a ``BlobImages`` reopens the store by its root and starts an empty cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from flywheel.datasets.fingerprint import fingerprint
from flywheel.learn.backbones import images_to_tensor
from flywheel.store.blobs import READ_BATCH, BlobStore, unusable_reason
from flywheel.store.id_index import SampleIds

DEFAULT_CACHE_BYTES = 2 << 30
# What a cached image costs beside its pixels: its array object and its place in the
# cache's ordered dict (~190 B measured with tracemalloc). Counted in the budget: a pool of
# tiny images would otherwise hold three times the memory its budget names.
CACHE_ENTRY_BYTES = 200
POOL_IMAGES_VERSION = 1


class UnreadableSampleError(RuntimeError):
    """A pool image could not be used when a step read it (its blob vanished, or no longer
    matches its checksum or decodes). A storage outage is not this: its own error is
    raised, to be retried. ``message`` first: a DataLoader worker re-raises it so."""

    def __init__(self, message: str, sample_id: str | None = None) -> None:
        super().__init__(message)
        self.sample_id = sample_id


class BlobImages:
    """Images of ``ids`` from ``blobs``, decoded by ``decode(bytes) -> uint8 array``."""

    def __init__(
        self,
        blobs: BlobStore,
        ids: Sequence[str],
        shape: tuple[int, ...],
        decode: Any,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        # A pool's SampleIds are kept as they are (bytes); other sequences become a list.
        self.ids = ids if isinstance(ids, SampleIds) else list(ids)
        self.blobs, self.decode = blobs, decode
        self.image_shape = tuple(shape)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached = 0
        self._owner = self  # whose cache and budget this one uses (a subset: its pool's)

    # -- array-like -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.ids), *self.image_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.read([self.ids[key]])[0]
        if isinstance(key, slice):
            return self.read(self.ids[key])
        return self.subset(key)

    def subset(self, key: np.ndarray | Sequence[int]) -> BlobImages:
        """A lazy subset by boolean mask or positions; it shares this one's cache."""
        pos = np.asarray(key)
        if pos.dtype == bool:
            if len(pos) != len(self.ids):
                raise IndexError(f"mask of {len(pos)} for {len(self.ids)} images")
            pos = np.flatnonzero(pos)
        ids = self.ids
        out = BlobImages(
            self.blobs,
            ids[pos] if isinstance(ids, SampleIds) else [ids[i] for i in pos.tolist()],
            self.image_shape,
            self.decode,
            self.cache_bytes,
        )
        out._owner = self._owner
        return out

    def fingerprint(self) -> str:
        """Names these images without reading them: the ids and the decoded shape."""
        return fingerprint("pool-images", POOL_IMAGES_VERSION, repr(self.image_shape), *self.ids)

    # -- reading ----------------------------------------------------------------------
    def read(self, ids: Sequence[str]) -> np.ndarray:
        """uint8 (len(ids), *image_shape): cached ones from memory, the rest fetched together."""
        out = np.empty((len(ids), *self.image_shape), dtype=np.uint8)
        owner = self._owner
        todo = []
        for row, sid in enumerate(ids):
            hit = owner._cache.get(sid)
            if hit is None:
                todo.append(row)
            else:
                owner._cache.move_to_end(sid)
                out[row] = hit
        for start in range(0, len(todo), READ_BATCH):
            rows = todo[start : start + READ_BATCH]
            fetched = self.blobs.get_many([ids[r] for r in rows])
            for row, got in zip(rows, fetched, strict=True):
                reason = unusable_reason(got)  # a storage outage is raised as it is
                if reason is not None:
                    raise UnreadableSampleError(f"sample {ids[row]}: {reason}", ids[row])
                try:
                    out[row] = self.decode(got)
                except Exception as exc:  # bytes in memory fail to decode only by themselves
                    message = f"sample {ids[row]}: undecodable image: {exc}"
                    raise UnreadableSampleError(message, ids[row]) from exc
                owner.remember(ids[row], out[row])
        return out

    def remember(self, sid: str, image: np.ndarray) -> None:
        """Keep ``sid``'s decoded image (e.g. from a validating read) in the cache."""
        if self._owner is not self:
            self._owner.remember(sid, image)
            return
        if sid in self._cache:
            self._cache.move_to_end(sid)
            return
        if image.nbytes + CACHE_ENTRY_BYTES > self.cache_bytes:
            return
        self._cache[sid] = image.copy()
        self._cached += image.nbytes + CACHE_ENTRY_BYTES
        while self._cached > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes + CACHE_ENTRY_BYTES

    def drop_cache(self) -> None:
        """Give the decoded images back (this one's pool's cache) when no more reads come."""
        self._owner._cache.clear()
        self._owner._cached = 0

    def __getstate__(self) -> dict[str, Any]:
        # A worker process gets the ids and the recipe, not the parent's cache.
        return {
            "blobs": self.blobs,
            "ids": self.ids,
            "shape": self.image_shape,
            "decode": self.decode,
            "cache_bytes": self.cache_bytes,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(
            state["blobs"], state["ids"], state["shape"], state["decode"], state["cache_bytes"]
        )  # type: ignore[misc]


class ConcatImages:
    """Several image sources one after the other, indexed like one array (lazy)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.offsets[-1]), *parts[0].shape[1:])
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[Any, int]:
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[part], i - int(self.offsets[part])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            part, j = self._locate(i)
            return part[j]
        if isinstance(key, slice):
            rows = range(*key.indices(len(self)))
            if not len(rows):
                return np.empty((0, *self.shape[1:]), dtype=np.uint8)
            return np.stack([self[i] for i in rows])
        pos = np.asarray(key)
        pos = np.flatnonzero(pos) if pos.dtype == bool else pos
        return IndexedImages(self, pos)

    def fingerprint(self) -> str:
        return fingerprint(
            "concat-images", POOL_IMAGES_VERSION, *map(source_fingerprint, self.parts)
        )


class IndexedImages:
    """``source`` seen through ``positions`` (a lazy take)."""

    def __init__(self, source: Any, positions: np.ndarray) -> None:
        self.source, self.positions = source, np.asarray(positions, dtype=np.int64)
        self.shape = (len(self.positions), *source.shape[1:])
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            return self.source[int(self.positions[key])]
        if isinstance(key, slice):
            rows = self.positions[key]
            if not len(rows):
                return np.empty((0, *self.shape[1:]), dtype=np.uint8)
            return np.stack([self.source[int(i)] for i in rows])
        pos = np.asarray(key)
        pos = np.flatnonzero(pos) if pos.dtype == bool else pos
        return IndexedImages(self.source, self.positions[pos])

    def fingerprint(self) -> str:
        return fingerprint(
            "indexed-images", POOL_IMAGES_VERSION, source_fingerprint(self.source), self.positions
        )


# What the learning loops take: a uint8 (N, H, W[, C]) array, or a lazy source like one.
ImageSource = np.ndarray | BlobImages | ConcatImages | IndexedImages


def is_lazy(images: Any) -> bool:
    return not isinstance(images, np.ndarray)


def stack_images(parts: Sequence[Any]) -> Any:
    """``np.concatenate(parts)`` for arrays; a lazy ``ConcatImages`` once any part is lazy."""
    if not any(is_lazy(p) for p in parts):
        return np.concatenate(parts)
    return ConcatImages(parts)


def source_fingerprint(images: Any) -> str:
    """A name for the images: their bytes for an array, ids and shape for a lazy source."""
    if is_lazy(images):
        return images.fingerprint()
    return fingerprint("image-array", POOL_IMAGES_VERSION, np.asarray(images))


class TorchView:
    """A lazy source as uint8 channel-first tensors: [i] -> (C, H, W), [a:b] -> (n, C, H, W)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return images_to_tensor(self.source[int(key)][None])[0]
        return images_to_tensor(self.source[key])


def torch_view(images: Any) -> torch.Tensor | TorchView:
    """What the loops index: the whole tensor for an array, a ``TorchView`` for a lazy one."""
    return TorchView(images) if is_lazy(images) else images_to_tensor(images)
