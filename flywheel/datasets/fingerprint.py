"""Names for outputs, made from their inputs (DESIGN.md, habit 4): one helper for every cache
key and content id, so a step whose output exists can find it and return early.

A key carries what made the output (``kind``) and the version of the code or format that
made it, then every input part. Bump a producer's version when a change to its code would
make old outputs wrong: a changed recipe then never reuses a stale cache. Parts are
length-prefixed, so ``("ab", "c")`` and ``("a", "bc")`` never collide.
"""

from __future__ import annotations

import hashlib

import numpy as np


class Fingerprint:
    """An incremental sha256 over ``kind``, ``version`` and the parts added in order."""

    def __init__(self, kind: str, version: int) -> None:
        self._h = hashlib.sha256(f"flywheel/{kind}/v{version}".encode())

    def add(self, *parts: str | bytes | np.ndarray) -> Fingerprint:
        """Add parts: text (UTF-8), bytes, or an array (its dtype, shape and bytes)."""
        for part in parts:
            if isinstance(part, np.ndarray):
                self.add(f"{part.dtype.str}{part.shape}", np.ascontiguousarray(part).tobytes())
                continue
            data = part.encode() if isinstance(part, str) else bytes(part)
            self._h.update(len(data).to_bytes(8, "big"))
            self._h.update(data)
        return self

    def hexdigest(self, length: int = 64) -> str:
        """The key: the first ``length`` hex digits (24 are plenty for a folder name)."""
        return self._h.hexdigest()[:length]


def fingerprint(kind: str, version: int, *parts: str | bytes | np.ndarray, length: int = 64) -> str:
    """``Fingerprint(kind, version).add(*parts).hexdigest(length)`` in one call."""
    return Fingerprint(kind, version).add(*parts).hexdigest(length)
