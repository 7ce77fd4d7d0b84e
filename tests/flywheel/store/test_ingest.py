import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select, text

from flywheel.config import IngestSettings
from flywheel.db import GroundTruth, Label, Sample
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.store.blobs import BlobStore
from flywheel.store.ingest import Candidate, SplitPlan, ingest_candidates, plan_splits
from flywheel.store.ingest_sources import (
    digits_candidates,
    imagefolder_candidates,
    manifest_candidates,
)
from flywheel.workspace import Workspace

SCHEMES = IngestSettings(uri_schemes=["memory"])  # manifests may also read memory://


def counts(ws: Workspace) -> tuple[int, int, int]:
    with ws.db.session() as s:
        return (
            s.scalar(select(func.count()).select_from(Sample)),
            s.scalar(select(func.count()).select_from(Label)),
            s.scalar(select(func.count()).select_from(GroundTruth)),
        )


def blob_files(ws: Workspace) -> list[Path]:
    return [p for p in (Path(ws.settings.storage_root) / "blobs").rglob("*") if p.is_file()]


def ingest(ws: Workspace, candidates, plan: SplitPlan = SplitPlan(), source: str = "test"):
    return ingest_candidates(ws.db, ws.blobs, candidates, source, ws.settings.ingest, plan)


@pytest.fixture
def folder(tmp_path: Path, make_png: Callable[..., bytes]) -> Path:
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.png").write_bytes(make_png(zlib.crc32(f"{cls}{i}".encode())))
    (root / "loose.png").write_bytes(make_png(99_999))  # class-less: unlabeled pool
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.png").write_bytes(make_png(5))
    return root


def test_imagefolder_labeled_and_unlabeled(workspace: Workspace, folder: Path) -> None:
    report = ingest(workspace, imagefolder_candidates(folder))
    assert report.added == 7 and not report.rejected and not report.duplicates
    assert report.by_split == {"train": 6, "pool": 1}
    assert report.labels_added == 6
    with workspace.db.session() as s:
        labels = {
            (sample.original_name, lab.label, lab.source)
            for sample, lab in s.execute(select(Sample, Label).join(Label))
        }
    assert ("cat/0.png", "cat", "seed") in labels and ("dog/2.png", "dog", "seed") in labels
    assert len(blob_files(workspace)) == 7


def test_duplicates_are_stored_once(workspace: Workspace, folder: Path) -> None:
    (folder / "cat" / "copy.png").write_bytes((folder / "cat" / "0.png").read_bytes())
    first = ingest(workspace, imagefolder_candidates(folder))
    assert first.added == 7 and first.duplicates == ["cat/copy.png"]
    again = ingest(workspace, imagefolder_candidates(folder))
    assert again.added == 0 and len(again.duplicates) == 8
    assert counts(workspace) == (7, 6, 0)
    assert len(blob_files(workspace)) == 7


def test_bad_files_are_rejected_and_nothing_is_written(
    workspace: Workspace, tmp_path: Path, make_png
) -> None:
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    good = make_png(1, size=32)
    (root / "a" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "text.png").write_text("a text file with an image name")
    report = ingest(workspace, imagefolder_candidates(root))
    reasons = {r.name: r.reason for r in report.rejected}
    assert reasons == {
        "a/corrupt.png": reasons["a/corrupt.png"],
        "a/empty.jpg": "empty file",
        "a/notes.txt": "unsupported file type '.txt'",
        "a/text.png": "not a decodable image",
        "a/truncated.png": reasons["a/truncated.png"],
    }
    assert reasons["a/truncated.png"].startswith("corrupt or truncated")
    assert reasons["a/corrupt.png"].startswith("corrupt or truncated")
    assert report.added == 0
    assert counts(workspace) == (0, 0, 0)
    assert blob_files(workspace) == []


def test_manifest_csv_and_parquet(workspace: Workspace, tmp_path: Path, make_png) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(make_png(100 + i))
    csv_path = tmp_path / "m.csv"
    csv_path.write_text(
        "uri,label,split\n"
        "imgs/0.png,a,train\n"
        f"{tmp_path / 'imgs' / '1.png'},b,test\n"
        "imgs/2.png,,\n"
        "imgs/missing.png,a,\n"
        "ftp://example.invalid/x.png,a,\n"
        "nosuch://bucket/x.png,a,\n"
        "imgs/3.png,a,holdout\n"
        ",a,train\n"
    )
    report = ingest(workspace, manifest_candidates(csv_path, SCHEMES))
    assert report.added == 3
    assert report.by_split == {"train": 1, "test": 1, "pool": 1}
    reasons = sorted(r.reason for r in report.rejected)
    assert "file not found" in reasons
    assert sum("rule: scheme_not_allowed" in r for r in reasons) == 2
    assert "missing uri" in reasons
    assert any("unknown split 'holdout'" in r for r in reasons)
    pq.write_table(
        pa.table({"uri": ["imgs/3.png"], "label": [7]}),  # wrong type: int label -> "7"
        tmp_path / "m.parquet",
    )
    report = ingest(workspace, manifest_candidates(tmp_path / "m.parquet", SCHEMES))
    assert report.added == 1
    with workspace.db.session() as s:
        assert "7" in set(s.scalars(select(Label.label)))


def test_manifest_reads_other_filesystems(workspace: Workspace, tmp_path: Path, make_png) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/remote/img.png", make_png(7))
    path = tmp_path / "m.csv"
    path.write_text("uri,label\nmemory://remote/img.png,x\nmemory://remote/nope.png,x\n")
    report = ingest(workspace, manifest_candidates(path, SCHEMES))
    assert report.added == 1
    assert [r.reason for r in report.rejected] == ["not found"]


def test_bad_manifests_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        manifest_candidates(tmp_path / "none.csv", SCHEMES)
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(InvalidInputError, match=r"parquet or \.csv"):
        manifest_candidates(tmp_path / "m.json", SCHEMES)
    (tmp_path / "m.csv").write_text("path,label\nx.png,a\n")
    with pytest.raises(InvalidInputError, match="no 'uri' column"):
        manifest_candidates(tmp_path / "m.csv", SCHEMES)
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="cannot read manifest"):
        manifest_candidates(tmp_path / "b.parquet", SCHEMES)


def test_digits_split_protocol(workspace: Workspace) -> None:
    plan = SplitPlan(labels_per_class=5, test_fraction=0.3, seed=0)
    report = ingest(workspace, digits_candidates(), plan, source="digits")
    assert report.added == 1797 and not report.rejected
    assert report.by_split == {"test": 539, "train": 50, "pool": 1208}
    samples, labels, truth = counts(workspace)
    assert (samples, labels, truth) == (1797, 589, 1208)
    with workspace.db.session() as s:
        per_class = dict(
            s.execute(
                select(Label.label, func.count())
                .join(Sample)
                .where(Sample.split == "train")
                .group_by(Label.label)
            ).all()
        )
        # Hidden truth never doubles as a visible label.
        overlap = s.scalar(
            select(func.count())
            .select_from(GroundTruth)
            .join(Label, Label.sample_id == GroundTruth.sample_id)
        )
    assert per_class == {str(d): 5 for d in range(10)}
    assert overlap == 0


def test_split_plan_is_deterministic_and_stratified() -> None:
    cands = [Candidate(f"{c}{i}", bytes, c) for c in "ab" for i in range(20)]
    plan = SplitPlan(labels_per_class=2, test_fraction=0.25, seed=3)
    a = [(p.candidate.name, p.split) for p in plan_splits(cands, plan)]
    b = [(p.candidate.name, p.split) for p in plan_splits(cands, plan)]
    assert a == b
    assert sum(1 for n, s in a if s == "test" and n.startswith("a")) == 5
    assert sum(1 for _, s in a if s == "train") == 4
    other = [(p.candidate.name, p.split) for p in plan_splits(cands, SplitPlan(2, 0.25, seed=4))]
    assert other != a
    with pytest.raises(InvalidInputError):
        SplitPlan(test_fraction=1.5)


def test_failed_transaction_leaves_no_blobs(tmp_path: Path, make_png) -> None:
    """A database failure mid-batch rolls back the rows and deletes the batch's new blobs."""
    from flywheel.config import Settings
    from flywheel.workspace import open_workspace

    ws = open_workspace(Settings(data_dir=tmp_path / "d"))
    keep = ingest(ws, [Candidate("kept", lambda: make_png(1), "a")])
    assert keep.added == 1
    with ws.db.engine.begin() as conn:  # a real failure inside the DB, not a mock
        conn.execute(
            text(
                "CREATE TRIGGER boom BEFORE INSERT ON labels "
                "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
            )
        )
    cands = [Candidate(f"n{i}", lambda i=i: make_png(10 + i), "a") for i in range(5)]
    with pytest.raises(Exception, match="disk on fire"):
        ingest(ws, cands)
    assert counts(ws) == (1, 1, 0)
    assert len(blob_files(ws)) == 1
    assert BlobStore(ws.settings.storage_root).get(keep.sample_ids[0]) == make_png(1)
    ws.close()
