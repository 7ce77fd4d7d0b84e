"""A manifest says what made each label without the database: the columns from a label's
evidence, a whole cycle's manifest read by pyarrow and pandas alone, and an older manifest
still readable."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.cycle.runner import run_cycle
from flywheel.cycle.select_plan import plan_of
from flywheel.cycle.state import load_cycle
from flywheel.datasets.provenance import (
    PROVENANCE_COLUMNS,
    SCHEMA_KEY,
    manifest_schema_version,
    provenance,
)
from flywheel.db import DatasetVersion
from flywheel.store.blobs import sha256_hex
from tests.flywheel.cycle.test_runner import ingest_digits

PSEUDO_EVIDENCE = {
    "decision": "accepted",
    "score": 0.97311,
    "classifier_prob": 0.99,
    "knn_share": 0.875,
    "threshold": 0.9512,
    "neighbors": [["abc", 0.93]],
    "embedding": "ssl",
    "embedding_fingerprint": "e" * 24,
    "model_version": "3",
    "calibration": "held-out",
}
FEEDBACK_EVIDENCE = {  # as flywheel.feedback.consensus writes it
    "votes": [
        {"annotator": "shop/a", "label": "cat", "kind": "confirm", "reliability": 0.9},
        {"annotator": "shop/b", "label": "cat", "kind": "correct", "reliability": 0.8},
        {"annotator": "shop/c", "label": "dog", "kind": "correct", "reliability": 0.6},
    ],
    "posterior": {"cat": 0.9231, "dog": 0.0769},
}


def test_columns_come_from_the_evidence_of_each_source() -> None:
    assert provenance("pseudo", "7", PSEUDO_EVIDENCE) == {
        "model_version": "3",
        "embedding": "e" * 24,
        "threshold": 0.9512,
        "agreement": 0.875,
        "score": 0.97311,
        "votes": None,
        "posterior": None,
    }
    got = provenance("feedback", "cat", FEEDBACK_EVIDENCE)
    assert (got["votes"], got["posterior"]) == (3, 0.9231)
    assert got["model_version"] is None and got["score"] is None
    for source in ("seed", "human"):  # the reviewer is the row's annotator column
        assert provenance(source, "cat", {"anything": 1}) == dict.fromkeys(PROVENANCE_COLUMNS)
    # Evidence written before these fields existed, or malformed: nulls, never an error.
    old = {k: v for k, v in PSEUDO_EVIDENCE.items() if k not in ("model_version",)}
    assert provenance("pseudo", "7", old)["model_version"] is None
    assert provenance("pseudo", "7", {"threshold": "high", "score": True})["threshold"] is None
    assert provenance("feedback", "cat", {"votes": 3, "posterior": [0.9]})["votes"] is None
    assert provenance("pseudo", "7", None)["score"] is None


def manifest_file(ws, version_id: str) -> Path:
    return Path(ws.settings.storage_root) / "versions" / f"{version_id}.parquet"


def test_a_cycle_s_manifest_carries_what_made_its_pseudo_labels(ws, registry) -> None:
    ingest_digits(ws, 300)
    learning = ws.settings.learning.model_copy(
        update={"selection": "agreement", "fixmatch": "first"}
    )
    first = run_cycle(ws, registry, learning)
    second = run_cycle(ws, registry, learning)
    plan = plan_of(load_cycle(ws, second.cycle_id))
    path = manifest_file(ws, second.dataset_version)

    table = pq.read_table(path)  # pyarrow alone
    assert manifest_schema_version(table) == 2 and table.schema.metadata[SCHEMA_KEY] == b"2"
    rows = table.to_pylist()
    pseudo = [r for r in rows if r["source"] == "pseudo"]
    assert pseudo
    for r in pseudo:
        # "agreement" asks the newest model: the first cycle's, which scored the pool.
        assert r["model_version"] == first.model_version == plan.models["latest"]
        assert r["embedding"] == plan.fingerprint
        assert r["score"] == pytest.approx(r["confidence"], abs=1e-5)
        assert 0.0 <= r["agreement"] <= 1.0 and r["threshold"] is not None
    seeds = [r for r in rows if r["source"] == "seed"]
    assert seeds and all(r[c] is None for r in seeds for c in PROVENANCE_COLUMNS)

    frame = pd.read_parquet(path)  # pandas alone
    assert set(PROVENANCE_COLUMNS) <= set(frame.columns)
    assert (frame.loc[frame.source == "pseudo", "model_version"] == first.model_version).all()


def test_a_manifest_of_schema_1_is_still_read(ws, registry) -> None:
    ingest_digits(ws, 200)
    version, _ = ws.versions.snapshot("seed labels")
    path = manifest_file(ws, version.id)
    new = pq.read_table(path)
    # As an older release wrote it: no provenance columns, no schema key.
    old = new.drop_columns(list(PROVENANCE_COLUMNS)).replace_schema_metadata(
        {k: v for k, v in new.schema.metadata.items() if k != SCHEMA_KEY}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(old, sink)
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data)
    with ws.db.session() as s:
        s.get(DatasetVersion, version.id).checksum = sha256_hex(data)

    _, table = ws.versions.read(version.id)
    assert manifest_schema_version(pq.read_table(path)) == 1
    assert table.column_names == new.column_names
    assert all(table[c].null_count == table.num_rows for c in PROVENANCE_COLUMNS)
    assert table.drop_columns(list(PROVENANCE_COLUMNS)).equals(
        new.drop_columns(list(PROVENANCE_COLUMNS))
    )
