"""The cycle's samples from one narrow query: groups, pool labels as arrays, the plan."""

from __future__ import annotations

import numpy as np

from flywheel.db import GroundTruth, Label
from flywheel.learn.sample_rows import PoolLabels, scan_samples
from flywheel.store import quarantine
from flywheel.store.id_index import IdIndex
from flywheel.workspace import Workspace
from tests.conftest import sample_row


def sid(n: int) -> str:
    return f"{n:064x}"


def label(n: int, name: str, source: str, confidence: float = 1.0, **kw: object) -> Label:
    return Label(
        sample_id=sid(n), label=name, source=source, confidence=confidence, method="t", **kw
    )


def populate(ws: Workspace) -> None:
    """0-1 seed-labeled, 2 a labeled test sample, 3 an unlabeled test sample, 4-8 pool:
    4 pseudo "a" (0.75), 5 pseudo "zz" (a class nobody labels), 6 pseudo then retracted,
    7 pseudo superseded by a human "b" (so labeled), 8 unlabeled and quarantined."""
    with ws.db.session() as s:
        s.add_all([sample_row(i, split="test" if i in (2, 3) else "pool") for i in range(10)])
        s.flush()
        s.add_all(
            [
                label(0, "a", "seed"),
                label(1, "b", "seed"),
                label(2, "a", "seed"),
                label(4, "a", "pseudo", 0.75),
                label(5, "zz", "pseudo", 0.5),
                label(6, "b", "pseudo", 0.9),
                label(7, "a", "pseudo", 0.8),
            ]
        )
        s.flush()
        s.add_all([label(6, "b", "pseudo", 0.0, retracted=True), label(7, "b", "human")])
        s.add_all(
            [GroundTruth(sample_id=sid(4), label="b"), GroundTruth(sample_id=sid(9), label="a")]
        )
    quarantine.record(ws.db, {sid(8): "lost"}, None)


def test_the_scan_groups_samples_and_keeps_pool_labels_as_arrays(workspace: Workspace) -> None:
    populate(workspace)
    rows = scan_samples(workspace.db)
    assert rows.groups == {"labeled": [sid(0), sid(1), sid(7)], "test": [sid(2)]}
    assert rows.pool == [sid(4), sid(5), sid(6), sid(9)]
    assert rows.pool.keys.dtype == "S64"  # bytes, not a Python string an id
    assert rows.human == {sid(0): "a", sid(1): "b", sid(2): "a", sid(7): "b"}
    assert rows.dims == {(8, 8): 8}  # the unlabeled test and the quarantined are not used

    current, truth = rows.pool_labels(["a", "b"])
    assert current.names == ["a", "b", "zz"]  # the cycle's classes first
    assert current.code.tolist() == [0, 2, -1, -1]
    assert current.confidence.tolist() == [0.75, 0.5, 0.0, 0.0]
    assert truth.tolist() == [1, -1, -1, 0]
    assert current.at(0) == ("a", 0.75) and current.at(2) is None
    assert current.in_classes(2).tolist() == [True, False, False, False]


def test_a_planned_pool_leaves_out_later_arrivals(workspace: Workspace) -> None:
    populate(workspace)
    rows = scan_samples(workspace.db, IdIndex([sid(9), sid(4), sid(7)]))
    assert rows.pool == [sid(4), sid(9)]  # 7 is labeled now: not the pool's
    assert rows.groups["labeled"] == [sid(0), sid(1), sid(7)]
    current, truth = rows.pool_labels(["a", "b"])
    assert current.code.tolist() == [0, -1] and truth.tolist() == [1, 0]


def test_pool_labels_from_a_mapping() -> None:
    current = PoolLabels.of(["x", "y", "z"], {"y": ("b", 0.5), "z": ("q", 0.25)}, ["a", "b"])
    assert current.names == ["a", "b", "q"]
    assert current.code.tolist() == [-1, 1, 2]
    assert current.confidence.dtype == np.float32
    assert [current.at(i) for i in range(3)] == [None, ("b", 0.5), ("q", 0.25)]
