"""The select step's accepted pseudo-labels, as the train step reads them back."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np

from flywheel.cycle.artifacts import load_selection, save_selection
from flywheel.cycle.state import start_cycle
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.sample_rows import PoolLabels
from flywheel.select.result import Decision
from flywheel.store.storage import read_bytes, write_atomic
from flywheel.workspace import Workspace

CLASSES = ["cat", "dog", "eel"]
A, R = Decision.ACCEPTED, Decision.REJECTED


def pool_data(pool: list[str]) -> CycleData:
    empty = LabeledSet([], np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64))
    return CycleData(
        CLASSES,
        empty,
        empty,
        pool,
        np.zeros((len(pool), 8, 8), np.uint8),
        PoolLabels.of(pool, {}, CLASSES),
        np.full(len(pool), -1),
    )


def sid(n: int) -> str:
    return f"{n:064x}"


def test_the_train_step_reads_the_accepted_labels_of_its_pool(workspace: Workspace) -> None:
    pool = [sid(i) for i in range(5)]
    result = SimpleNamespace(
        decision=np.array([A, R, A, A, R], np.int8),
        label=np.array([2, 0, 1, 0, 1], np.int64),
        score=np.array([0.9, 0.1, 0.8, 0.7, 0.2], np.float32),
    )
    cycle = start_cycle(workspace, workspace.settings.learning)
    save_selection(workspace, cycle, pool_data(pool), SimpleNamespace(result=result, index=None))

    fs, path = workspace.cycle_file(cycle, "selection.npz")
    with np.load(io.BytesIO(read_bytes(fs, path))) as saved:
        assert saved["ids"].dtype == np.dtype("S64")  # a byte a character, not numpy str
        assert saved["codes"].tolist() == [2, 1, 0]

    # Sample 2 was labeled by a person since: it left the pool, and trains as labeled.
    later = pool_data([sid(0), sid(1), sid(3), sid(4)])
    accepted, labels, scores = load_selection(workspace, cycle, later)
    assert accepted.tolist() == [True, False, True, False]
    assert labels.tolist() == [2, 0]
    np.testing.assert_allclose(scores, [0.9, 0.7])


def test_a_selection_written_with_class_names_still_reads(workspace: Workspace) -> None:
    cycle = start_cycle(workspace, workspace.settings.learning)
    buf = io.BytesIO()  # the format before class codes: str ids, one name per sample
    names = np.array(["eel", "cat"], dtype=str)
    ids = np.array([sid(3), sid(1)], dtype=str)
    np.savez(buf, ids=ids, labels=names, scores=np.array([0.6, 0.5], np.float32))
    fs, path = workspace.cycle_file(cycle, "selection.npz")
    write_atomic(fs, path, buf.getvalue())

    accepted, labels, scores = load_selection(workspace, cycle, pool_data([sid(1), sid(3)]))
    assert accepted.tolist() == [True, True]
    assert labels.tolist() == [0, 2]
    np.testing.assert_allclose(scores, [0.5, 0.6])
