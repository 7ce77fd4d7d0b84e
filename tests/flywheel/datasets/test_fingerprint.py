"""Output names: the key is a sha256 over kind, version and length-prefixed parts."""

from __future__ import annotations

import hashlib

import numpy as np

from flywheel.datasets.fingerprint import Fingerprint, fingerprint


def test_key_matches_a_hand_computed_sha256() -> None:
    h = hashlib.sha256(b"flywheel/demo/v3")
    for part in (b"ab", b"c"):
        h.update(len(part).to_bytes(8, "big") + part)
    assert fingerprint("demo", 3, "ab", b"c") == h.hexdigest()
    assert fingerprint("demo", 3, "ab", b"c", length=24) == h.hexdigest()[:24]


def test_parts_never_run_together_and_the_version_counts() -> None:
    assert fingerprint("k", 1, "ab", "c") != fingerprint("k", 1, "a", "bc")
    assert fingerprint("k", 1, "x") != fingerprint("k", 2, "x")  # a changed recipe: new key
    assert fingerprint("k", 1, "x") != fingerprint("j", 1, "x")


def test_arrays_are_keyed_by_dtype_shape_and_bytes() -> None:
    a = np.arange(6, dtype=np.int32)
    assert fingerprint("k", 1, a) == fingerprint("k", 1, a.copy())
    assert fingerprint("k", 1, a) != fingerprint("k", 1, a.reshape(2, 3))
    assert fingerprint("k", 1, a) != fingerprint("k", 1, a.astype(np.int64))
    # A non-contiguous view is keyed by its values, like its copy.
    assert fingerprint("k", 1, a[::2]) == fingerprint("k", 1, np.array([0, 2, 4], np.int32))


def test_incremental_equals_one_call() -> None:
    assert Fingerprint("k", 1).add("a").add("b").hexdigest() == fingerprint("k", 1, "a", "b")
