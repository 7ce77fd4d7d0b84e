"""The embeddings artifact: written whole or streamed from the store, read back the same."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.cycle.state import start_cycle
from flywheel.errors import InvalidInputError
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.learn.sample_rows import PoolLabels
from flywheel.learn.snapshots import load_embeddings, save_embeddings
from flywheel.workspace import Workspace

FP = "cd" * 12


def ids(start: int, n: int) -> list[str]:
    return [f"{i:064x}" for i in range(start, start + n)]


def vectors(sample_ids: list[str]) -> np.ndarray:
    """Rows told apart by their id: [n, -n, 1]."""
    n = np.array([int(s, 16) for s in sample_ids], dtype=np.float32)
    return np.stack([n, -n, np.ones_like(n)], axis=1)


def cycle_data(labeled: list[str], pool: list[str], test: list[str]) -> CycleData:
    empty = np.zeros((0, 8, 8), np.uint8)
    return CycleData(
        ["a", "b"],
        LabeledSet(labeled, empty, np.zeros(len(labeled), np.int64)),
        LabeledSet(test, empty, np.zeros(len(test), np.int64)),
        pool,
        empty,
        PoolLabels.of(pool, {}, ["a", "b"]),
        np.full(len(pool), -1),
    )


def test_the_pool_streamed_from_the_store_reads_back_as_if_written_whole(
    workspace: Workspace,
) -> None:
    labeled, pool, test = ids(0, 3), ids(10, 9), ids(30, 2)
    store = EmbeddingStore(workspace.settings.storage_root)
    for start in range(0, len(pool), 4):  # three shards, read in their names' order
        store.put(FP, pool[start : start + 4], vectors(pool[start : start + 4]))
    data = cycle_data(labeled, pool, test)
    empty_pool = np.zeros((0, 3), np.float32)
    choice = EmbeddingChoice("ssl", FP, vectors(labeled), empty_pool, vectors(test), {})
    cycle = start_cycle(workspace, workspace.settings.learning)
    save_embeddings(workspace, cycle, choice, data, pool=store.rows(FP, pool))

    snap = load_embeddings(workspace, cycle)
    assert snap is not None and snap.name == "ssl"
    got = snap.ids.tolist()
    # labeled first and test last, in order; the pool between them in the store's order
    assert got[:3] == labeled and got[-2:] == test and sorted(got[3:-2]) == pool
    assert snap.split.tolist() == ["labeled"] * 3 + ["pool"] * 9 + ["test"] * 2
    np.testing.assert_array_equal(snap.vectors, vectors(got))

    whole = EmbeddingChoice("ssl", FP, vectors(labeled), vectors(pool), vectors(test), {})
    save_embeddings(workspace, cycle, whole, data)  # the step retried, written whole
    again = load_embeddings(workspace, cycle)
    assert again is not None and again.ids.tolist() == labeled + pool + test
    np.testing.assert_array_equal(again.vectors, vectors(labeled + pool + test))


def test_an_artifact_missing_pool_rows_is_not_written(workspace: Workspace) -> None:
    labeled, pool, test = ids(0, 2), ids(10, 3), ids(30, 1)
    choice = EmbeddingChoice("pca", FP, vectors(labeled), vectors(pool[:2]), vectors(test), {})
    cycle = start_cycle(workspace, workspace.settings.learning)
    data = cycle_data(labeled, pool, test)
    with pytest.raises(InvalidInputError, match="3 pool ids for 2 vectors"):
        save_embeddings(workspace, cycle, choice, data)
    short = [(pool[:2], vectors(pool[:2]))]  # a stream that ends early
    with pytest.raises(InvalidInputError, match="'pool': 2"):
        save_embeddings(workspace, cycle, choice, data, pool=short)
    assert load_embeddings(workspace, cycle) is None  # no partial file is published
