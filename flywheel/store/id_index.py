"""Sample ids held as bytes: a list of them, and their positions in it found by binary search.

A Python ``str`` of a sha256 hex id costs 113 bytes and its place in a list 8 more; a
million of them are 121 MB in every step that holds the pool's ids. As one fixed-width
ASCII bytes array (``SampleIds``) they cost 64 bytes an id and are freed whole. A pool of a
million ids as a Python set or dict costs more again, and an Arrow hash lookup is rebuilt
for every call and kept by Arrow's allocator: sorted bytes (``IdIndex``) answer a shard's
ids in one vectorised search.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa


class SampleIds(Sequence[str]):
    """A list of sample ids as one numpy bytes array (``keys``), read as ``str``: an int
    gives one id, a slice, mask or index array gives a ``SampleIds`` of those."""

    __slots__ = ("keys",)

    def __init__(self, ids: Iterable[str] | np.ndarray = ()) -> None:
        self.keys = as_keys(ids if isinstance(ids, Sequence | np.ndarray) else list(ids))

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, key: int) -> str: ...
    @overload
    def __getitem__(self, key: slice | np.ndarray | Sequence[int]) -> SampleIds: ...
    def __getitem__(self, key: Any) -> str | SampleIds:
        if isinstance(key, int | np.integer):
            return self.keys[key].decode()
        return SampleIds(self.keys[key if isinstance(key, slice) else np.asarray(key)])

    def __iter__(self) -> Iterator[str]:
        for key in self.keys:
            yield key.decode()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleIds):
            return bool(np.array_equal(self.keys, other.keys))
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable in place, like a list

    def __add__(self, other: Sequence[str]) -> SampleIds:
        return SampleIds(np.concatenate([self.keys, as_keys(other)]))

    def __radd__(self, other: Sequence[str]) -> SampleIds:
        return SampleIds(np.concatenate([as_keys(other), self.keys]))

    def __repr__(self) -> str:
        return f"SampleIds({len(self)} ids)"

    def lines(self) -> bytes:
        """The ids one per line, as bytes, without making a string of each."""
        return b"\n".join(self.keys.tolist())


Ids = Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray


def as_keys(ids: Ids) -> np.ndarray:
    """``ids`` as a numpy bytes array (ids are ASCII: sha256 hex); a ``SampleIds``' own
    array, not a copy."""
    if isinstance(ids, SampleIds):
        return ids.keys
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        ids = ids.to_numpy(zero_copy_only=False)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids
    return np.array(ids, dtype=np.bytes_) if len(ids) else np.zeros(0, dtype="S1")


class IdIndex:
    """Where each of a list of ids is: ``find`` maps ids to their positions in it."""

    def __init__(self, ids: Ids) -> None:
        keys = as_keys(ids)
        self._order: np.ndarray | None = None  # None: the list is sorted, positions are its own
        if len(keys) > 1 and not (keys[1:] >= keys[:-1]).all():
            self._order = np.argsort(keys, kind="stable")
            if keys is ids or isinstance(ids, SampleIds):  # the caller's: sorted as a copy
                keys = keys[self._order]
            else:  # made here: sorted in place, so a million ids are not held twice
                keys.sort()
        # A pool is scanned in id order: its ids are searched as they are, with no copy
        # (the caller does not change them while the index lives).
        self._sorted = keys

    def __len__(self) -> int:
        return len(self._sorted)

    def find(self, ids: Ids) -> np.ndarray:
        """int64 (len(ids),): each id's position in the list (its first), -1 if absent."""
        wanted = as_keys(ids)
        if not len(self._sorted) or not len(wanted):
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        positions = at if self._order is None else self._order[at]
        return np.where(self._sorted[at] == wanted, positions, -1)

    def contains(self, ids: Ids) -> np.ndarray:
        """bool (len(ids),): which of ``ids`` are in the list."""
        return self.find(ids) >= 0

    def duplicates(self) -> list[str]:
        """Ids that the list holds more than once (at most three, for a message)."""
        twice = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
        return [k.decode() for k in np.unique(twice)[:3]]
