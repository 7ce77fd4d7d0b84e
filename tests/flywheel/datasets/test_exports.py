"""A dataset version exported in other tools' layouts, loaded by those tools themselves:
torchvision's ImageFolder and Hugging Face's ``load_dataset("parquet", ...)``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from PIL import Image
from torchvision.datasets import ImageFolder

from flywheel.datasets.exports import export_version, folder_name
from flywheel.errors import IntegrityError, InvalidInputError
from flywheel.store.ingest import Candidate, SplitPlan, ingest_candidates
from tests.flywheel.cycle.test_runner import ingest_digits


def expected(ws, version_id: str) -> dict[str, tuple[str, str, bytes]]:
    """sample id -> (split, label, stored bytes)."""
    _, table = ws.versions.read(version_id)
    return {
        r["sample_id"]: (r["split"], r["label"], ws.blobs.get(r["sample_id"]))
        for r in table.to_pylist()
    }


def test_imagefolder_is_what_torchvision_reads(ws, tmp_path: Path) -> None:
    ingest_digits(ws, 120)
    version, _ = ws.versions.snapshot("seed labels")
    want = expected(ws, version.id)
    report = export_version(ws.versions, ws.blobs, version.id, tmp_path / "tree", "imagefolder")
    assert report.rows == len(want) and sum(report.by_split.values()) == len(want)
    assert not (tmp_path / "tree.partial").exists()
    for split, n in report.by_split.items():
        folder = ImageFolder(str(tmp_path / "tree" / split))
        assert len(folder) == n
        for path, target in folder.samples:
            sid = Path(path).stem
            assert want[sid][0] == split and folder.classes[target] == want[sid][1]
            assert Path(path).read_bytes() == want[sid][2]  # the stored bytes, as they are
    classes = json.loads((tmp_path / "tree" / "classes.json").read_text())
    assert classes == {c: c for c in sorted({lab for _, lab, _ in want.values()})}
    with pytest.raises(InvalidInputError, match="not an empty folder"):
        export_version(ws.versions, ws.blobs, version.id, tmp_path / "tree", "imagefolder")


def test_hf_parquet_is_what_load_dataset_reads(ws, tmp_path: Path) -> None:
    ingest_digits(ws, 120)
    version, _ = ws.versions.snapshot("seed labels")
    want = expected(ws, version.id)
    report = export_version(ws.versions, ws.blobs, version.id, tmp_path / "hf", "hf")
    loaded = load_dataset("parquet", data_dir=str(tmp_path / "hf"), cache_dir=str(tmp_path / "c"))
    assert {s: len(loaded[s]) for s in loaded} == report.by_split
    names = loaded["train"].features["label"].names
    assert names == sorted({lab for _, lab, _ in want.values()})
    for split in loaded:
        for row in loaded[split]:
            sid = row["sample_id"]
            assert want[sid][0] == split and names[row["label"]] == want[sid][1]
            stored = np.asarray(Image.open(io.BytesIO(want[sid][2])))
            np.testing.assert_array_equal(np.asarray(row["image"]), stored)  # a PIL image


def test_hostile_class_names_stay_inside_their_folder(ws, tmp_path: Path, make_png) -> None:
    labels = ["../../etc", ".", "a/b", "ok"]
    cands = [
        Candidate(f"x{i}.png", lambda i=i: make_png(400 + i), label, "train")
        for i, label in enumerate(labels)
    ]
    ingest_candidates(ws.db, ws.blobs, cands, "odd", ws.settings.ingest, SplitPlan())
    version, _ = ws.versions.snapshot("odd labels")
    export_version(ws.versions, ws.blobs, version.id, tmp_path / "out", "imagefolder")
    made = sorted(
        p.relative_to(tmp_path / "out").parts[:2] for p in (tmp_path / "out").rglob("*.png")
    )
    assert made == sorted(("train", folder_name(lab)) for lab in labels)
    assert all(
        "/" not in folder_name(lab) and folder_name(lab) not in (".", "..") for lab in labels
    )
    mapping = json.loads((tmp_path / "out" / "classes.json").read_text())
    assert sorted(mapping.values()) == sorted(labels)
    assert not list(tmp_path.glob("etc*"))


def test_unknown_formats_are_refused(ws, tmp_path: Path) -> None:
    ingest_digits(ws, 60)
    with pytest.raises(InvalidInputError, match="unknown format"):
        export_version(ws.versions, ws.blobs, "latest", tmp_path / "x", "tfrecord")


def test_a_failed_export_leaves_no_half_tree(ws, tmp_path: Path) -> None:
    ingest_digits(ws, 60)
    version, _ = ws.versions.snapshot("seed labels")
    _, table = ws.versions.read(version.id)
    ws.blobs.delete(table["sample_id"][5].as_py())  # lost from the store since
    for fmt in ("imagefolder", "hf"):
        with pytest.raises(IntegrityError, match=r"cannot export sample .*: blob missing"):
            export_version(ws.versions, ws.blobs, version.id, tmp_path / fmt, fmt)
        assert not (tmp_path / fmt).exists() and not (tmp_path / f"{fmt}.partial").exists()
