"""Positions of sample ids in a fixed list, found by binary search over their sorted bytes.

A pool of a million ids as a Python set or dict costs more than the ids themselves, and an
Arrow hash lookup is rebuilt for every call and kept by Arrow's allocator. Sorted ASCII
bytes cost 64 bytes an id (a sha256 hex id), are freed whole, and answer a shard's ids in
one vectorised search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

Ids = Sequence[str] | np.ndarray | pa.Array | pa.ChunkedArray


def as_keys(ids: Ids) -> np.ndarray:
    """``ids`` as a numpy bytes array (ids are ASCII: sha256 hex)."""
    if isinstance(ids, pa.Array | pa.ChunkedArray):
        ids = ids.to_numpy(zero_copy_only=False)
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids
    return np.array(ids, dtype=np.bytes_) if len(ids) else np.zeros(0, dtype="S1")


class IdIndex:
    """Where each of a list of ids is: ``find`` maps ids to their positions in it."""

    def __init__(self, ids: Ids) -> None:
        keys = as_keys(ids)
        self._order = np.argsort(keys, kind="stable")
        if keys is ids:  # the caller's array: sorted as a copy
            self._sorted = keys[self._order]
        else:  # made here: sorted in place, so a million ids are not held twice
            keys.sort()
            self._sorted = keys

    def __len__(self) -> int:
        return len(self._sorted)

    def find(self, ids: Ids) -> np.ndarray:
        """int64 (len(ids),): each id's position in the list (its first), -1 if absent."""
        wanted = as_keys(ids)
        if not len(self._sorted) or not len(wanted):
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return np.where(self._sorted[at] == wanted, self._order[at], -1)

    def contains(self, ids: Ids) -> np.ndarray:
        """bool (len(ids),): which of ``ids`` are in the list."""
        return self.find(ids) >= 0

    def duplicates(self) -> list[str]:
        """Ids that the list holds more than once (at most three, for a message)."""
        twice = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
        return [k.decode() for k in np.unique(twice)[:3]]
