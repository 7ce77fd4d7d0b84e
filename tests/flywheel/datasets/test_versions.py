import zlib
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.db import Label
from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError
from flywheel.store.ingest import Candidate, SplitPlan, ingest_candidates
from flywheel.workspace import Workspace, open_workspace


def seed(ws: Workspace, make_png, labels: dict[str, str]) -> dict[str, str]:
    """Ingest one image per name with the given seed labels; returns name -> sample id."""
    cands = [
        Candidate(n, lambda n=n: make_png(zlib.crc32(n.encode())), lab) for n, lab in labels.items()
    ]
    report = ingest_candidates(ws.db, ws.blobs, cands, "test", ws.settings.ingest, SplitPlan())
    return dict(zip(labels, report.sample_ids, strict=True))


def add_label(ws: Workspace, sample_id: str, label: str, source: str, conf: float = 1.0) -> None:
    with ws.db.session() as s:
        s.add(Label(sample_id=sample_id, label=label, source=source, confidence=conf, method="t"))


def test_snapshot_round_trip(workspace: Workspace, make_png) -> None:
    ids = seed(workspace, make_png, {"a": "cat", "b": "dog", "c": "dog"})
    info, created = workspace.versions.snapshot("first")
    assert created and info.parent_id is None and info.num_rows == 3
    assert info.stats["by_class_source"] == {"cat": {"seed": 1}, "dog": {"seed": 2}}
    assert info.stats["classes"] == ["cat", "dog"]
    read_info, table = workspace.versions.read(info.id)
    assert read_info == info
    assert table.column("sample_id").to_pylist() == sorted(ids.values())
    assert dict(zip(table["sample_id"].to_pylist(), table["label"].to_pylist(), strict=True)) == {
        ids["a"]: "cat",
        ids["b"]: "dog",
        ids["c"]: "dog",
    }
    assert set(table["source"].to_pylist()) == {"seed"}


def test_unchanged_labels_return_the_same_version(workspace: Workspace, make_png) -> None:
    seed(workspace, make_png, {"a": "cat"})
    first, _ = workspace.versions.snapshot()
    again, created = workspace.versions.snapshot()
    assert not created and again.id == first.id
    assert len(workspace.versions.list()) == 1


def test_new_labels_make_a_child_version(workspace: Workspace, make_png) -> None:
    ids = seed(workspace, make_png, {"a": "cat"})
    first, _ = workspace.versions.snapshot()
    add_label(workspace, ids["a"], "dog", "human")  # supersedes the seed label
    second, created = workspace.versions.snapshot()
    assert created and second.parent_id == first.id and second.id != first.id
    assert workspace.versions.resolve("latest").id == second.id
    assert workspace.versions.resolve(second.id[:8]).id == second.id
    _, old = workspace.versions.read(first.id)
    assert old["label"].to_pylist() == ["cat"]  # published versions never change


def test_retracted_labels_leave_the_next_version(workspace: Workspace, make_png) -> None:
    ids = seed(workspace, make_png, {"a": "cat", "b": "dog"})
    add_label(workspace, ids["b"], "cat", "pseudo", 0.95)
    v1, _ = workspace.versions.snapshot()
    with workspace.db.session() as s:
        s.add(Label(sample_id=ids["b"], label="cat", source="pseudo", method="t", retracted=True))
    v2, created = workspace.versions.snapshot()
    assert created and v2.num_rows == 1 and v1.num_rows == 2
    assert workspace.versions.diff(v1.id, v2.id).removed["sample_id"].to_pylist() == [ids["b"]]


def test_version_id_is_independent_of_database(tmp_path: Path, make_png) -> None:
    """The same labels in two databases give the same version id (content, not row ids)."""
    ids = []
    for name, order in (("one", ["a", "b"]), ("two", ["b", "a"])):
        ws = open_workspace(Settings(data_dir=tmp_path / name))
        seed(ws, make_png, {n: {"a": "cat", "b": "dog"}[n] for n in order})
        ids.append(ws.versions.snapshot()[0].id)
        ws.close()
    assert ids[0] == ids[1]


def test_tampered_manifest_is_refused(workspace: Workspace, make_png) -> None:
    seed(workspace, make_png, {"a": "cat"})
    info, _ = workspace.versions.snapshot()
    path = Path(info.manifest_uri.removeprefix("file://"))
    table = pq.read_table(path)
    pq.write_table(table.set_column(3, "label", pq.read_table(path)["source"]), path)
    with pytest.raises(IntegrityError, match="fails its checksum"):
        workspace.versions.read(info.id)
    path.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        workspace.versions.read(info.id)


def test_resolve_errors(workspace: Workspace, make_png) -> None:
    with pytest.raises(NotFoundError, match="no dataset versions yet"):
        workspace.versions.resolve("latest")
    with pytest.raises(InvalidInputError, match="nothing to snapshot"):
        workspace.versions.snapshot()
    seed(workspace, make_png, {"a": "cat"})
    workspace.versions.snapshot()
    with pytest.raises(NotFoundError):
        workspace.versions.resolve("ffffffff")
    with pytest.raises(InvalidInputError, match="too short"):
        workspace.versions.resolve("ab")


def test_diff_on_a_hand_built_example(workspace: Workspace, make_png) -> None:
    ids = seed(workspace, make_png, {"a": "cat", "b": "dog", "c": "dog"})
    v1, _ = workspace.versions.snapshot()
    add_label(workspace, ids["b"], "cat", "human")  # relabeled dog -> cat
    add_label(workspace, ids["c"], "dog", "feedback", 0.9)  # same label, new provenance
    more = seed(workspace, make_png, {"d": "bird", "e": "cat"})  # added
    v2, _ = workspace.versions.snapshot()

    d = workspace.versions.diff(v1.id, v2.id)
    assert sorted(d.added["sample_id"].to_pylist()) == sorted(more.values())
    assert d.removed.num_rows == 0
    assert d.relabeled["sample_id"].to_pylist() == [ids["b"]]
    assert d.relabeled.select(["label_a", "label_b", "source_b"]).to_pylist() == [
        {"label_a": "dog", "label_b": "cat", "source_b": "human"}
    ]
    assert d.reattributed["sample_id"].to_pylist() == [ids["c"]]
    assert d.summary() == [
        {"change": "added", "label": "bird", "source": "seed", "count": 1},
        {"change": "added", "label": "cat", "source": "seed", "count": 1},
        {"change": "reattributed", "label": "dog", "source": "feedback", "count": 1},
        {"change": "relabeled", "label": "dog -> cat", "source": "human", "count": 1},
    ]
    back = workspace.versions.diff(v2.id, v1.id)  # the reverse: added rows become removed
    assert sorted(back.removed["sample_id"].to_pylist()) == sorted(more.values())
    assert back.added.num_rows == 0
    assert back.relabeled.select(["label_a", "label_b"]).to_pylist() == [
        {"label_a": "cat", "label_b": "dog"}
    ]
    same = workspace.versions.diff(v1.id, v1.id)
    assert same.summary() == []


def test_export_parquet_and_csv(workspace: Workspace, make_png, tmp_path: Path) -> None:
    seed(workspace, make_png, {"a": "cat", "b": "dog"})
    info, table = workspace.versions.read(workspace.versions.snapshot()[0].id)
    out = workspace.versions.export(info.id, tmp_path / "out" / "v.parquet", "parquet")
    assert (
        pq.read_table(out)
        .select(["sample_id", "label"])
        .equals(table.select(["sample_id", "label"]))
    )
    out_csv = workspace.versions.export(info.id, tmp_path / "v.csv", "csv")
    assert pacsv.read_csv(out_csv)["label"].to_pylist() == table["label"].to_pylist()
    with pytest.raises(InvalidInputError):
        workspace.versions.export(info.id, tmp_path / "v.xls", "xls")  # type: ignore[arg-type]
