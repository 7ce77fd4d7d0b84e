"""Labels made in Label Studio or written as COCO come in as human labels with their
annotators: validation first, nothing half written, one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.db import Sample
from flywheel.db.labels import current_labels_query
from flywheel.errors import InvalidInputError
from flywheel.store.blobs import sha256_hex
from flywheel.store.ingest import Candidate, ingest_candidates
from flywheel.store.label_imports import coco_candidates, labelstudio_candidates


def annotation(choice, who=None, cancelled=False) -> dict:
    result = [] if choice is None else [
        {"type": "choices", "from_name": "class", "to_name": "image",
         "value": {"choices": choice if isinstance(choice, list) else [choice]}}
    ]  # fmt: skip
    return {"id": 1, "completed_by": who, "was_cancelled": cancelled, "result": result}


def current(ws, sha: str) -> tuple[str, str, str | None] | None:
    with ws.db.session() as s:
        lab = s.scalars(current_labels_query(sample_ids=[sha])).first()
        return None if lab is None else (lab.label, lab.source, lab.annotator)


def test_a_label_studio_export_comes_in_as_human_labels(ws, tmp_path: Path, make_png) -> None:
    media = tmp_path / "media"
    (media / "upload" / "1").mkdir(parents=True)
    (media / "photos").mkdir()
    pngs = {i: make_png(500 + i) for i in range(8)}
    (media / "photos" / "a.png").write_bytes(pngs[0])
    (media / "upload" / "1" / "b.png").write_bytes(pngs[1])
    for i in range(2, 8):
        (media / f"{i}.png").write_bytes(pngs[i])
    # One image was ingested unlabeled earlier: the export labels it.
    ingest_candidates(
        ws.db, ws.blobs, [Candidate("old.png", lambda: pngs[7])], "up", ws.settings.ingest
    )
    ann = {"email": "ann@example.org", "id": 3}
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=photos/a.png"},
         "annotations": [annotation("cat", ann)]},
        {"id": 2, "data": {"image": "/data/upload/1/b.png"},
         "annotations": [annotation("dog", 4), annotation("dog", ann)]},
        {"id": 3, "data": {"image": "2.png"},
         "annotations": [annotation("cat", 4), annotation("dog", ann)]},
        {"id": 4, "data": {"image": "3.png"}, "annotations": [annotation(["cat", "dog"], ann)]},
        {"id": 5, "data": {"image": "4.png"},
         "annotations": [annotation("cat", ann, cancelled=True)]},
        {"id": 6, "data": {"image": "5.png"}, "annotations": []},
        {"id": 7, "data": {"img": "6.png"}, "annotations": [annotation("dog", None)]},
        {"id": 8, "data": {"image": "7.png"}, "annotations": [annotation("dog", ann)]},
        {"id": 9, "data": {"image": "missing.png"}, "annotations": [annotation("dog", ann)]},
    ]  # fmt: skip
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))

    cands = labelstudio_candidates(export, ws.settings.ingest, root=media)
    report = ingest_candidates(
        ws.db, ws.blobs, cands, "labelstudio", ws.settings.ingest, label_source="human"
    )
    assert report.added == 3 and report.by_split == {"train": 3}
    assert report.labels_added == 4  # three new samples and the one already here
    reasons = {r.name.split(":")[0]: r.reason for r in report.rejected}
    assert reasons["task 3"].startswith("annotators disagree (cat: labelstudio:4; dog: ")
    assert reasons["task 4"] == "several choices (cat, dog): not one class"
    assert reasons["task 5"] == reasons["task 6"] == "no completed annotation with a choice"
    assert "task 9" in reasons and len(reasons) == 5
    assert current(ws, sha256_hex(pngs[0])) == ("cat", "human", "labelstudio:ann@example.org")
    both = "labelstudio:4,labelstudio:ann@example.org"
    assert current(ws, sha256_hex(pngs[1])) == ("dog", "human", both)
    assert current(ws, sha256_hex(pngs[6])) == ("dog", "human", "labelstudio")
    assert current(ws, sha256_hex(pngs[7])) == ("dog", "human", "labelstudio:ann@example.org")

    # The same export again says nothing new: no sample, no label.
    again = ingest_candidates(
        ws.db, ws.blobs, labelstudio_candidates(export, ws.settings.ingest, root=media),
        "labelstudio", ws.settings.ingest, label_source="human",
    )  # fmt: skip
    assert (again.added, again.labels_added) == (0, 0)


@pytest.mark.parametrize(
    "body",
    ['{"not": "a list"}', "[1, 2]", "not json", '{"images": [{"id": 1}]}'],
)
def test_a_file_that_is_no_such_export_changes_nothing(ws, tmp_path: Path, body: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(body)
    with pytest.raises(InvalidInputError):
        labelstudio_candidates(path, ws.settings.ingest)
    with pytest.raises(InvalidInputError):
        coco_candidates(path, ws.settings.ingest)
    with ws.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 0


def test_coco_image_level_labels(ws, tmp_path: Path, make_png) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(make_png(600 + i))
    doc = {
        "info": {"contributor": "acme-labeling"},
        "images": [{"id": i, "file_name": f"{i}.png"} for i in range(4)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1},
            {"id": 2, "image_id": 0, "category_id": 1},  # two boxes, one class: "cat"
            {"id": 3, "image_id": 1, "category_id": 2, "attributes": {"annotator": "bo"}},
            {"id": 4, "image_id": 2, "category_id": 1},
            {"id": 5, "image_id": 2, "category_id": 2},  # two classes: not image-level
        ],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    cands = coco_candidates(path, ws.settings.ingest, images_root=tmp_path / "imgs")
    report = ingest_candidates(
        ws.db, ws.blobs, cands, "coco", ws.settings.ingest, label_source="human"
    )
    assert report.added == 3 and report.by_split == {"train": 2, "pool": 1}
    assert [r.reason for r in report.rejected] == [
        "several categories (cat, dog): not an image-level label"
    ]
    assert current(ws, sha256_hex(make_png(600))) == ("cat", "human", "coco:acme-labeling")
    assert current(ws, sha256_hex(make_png(601))) == ("dog", "human", "coco:bo")
    assert current(ws, sha256_hex(make_png(603))) is None  # no annotation: an unlabeled sample

    bad = dict(doc, annotations=[{"id": 9, "image_id": 0, "category_id": 7}])
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError, match="no known category"):
        coco_candidates(path, ws.settings.ingest)


def test_the_cli_imports_label_studio(ws, tiny_settings, tmp_path: Path, make_png) -> None:
    (tmp_path / "a.png").write_bytes(make_png(700))
    task = {"id": 1, "data": {"image": "a.png"}, "annotations": [annotation("cat", 2)]}
    (tmp_path / "ls.json").write_text(json.dumps([task]))
    # The same database (SQLite file or PostgreSQL schema) through its environment form.
    runner = CliRunner(env={"FLYWHEEL_DATABASE__URL": tiny_settings.database_url, "COLUMNS": "200"})
    base = ["--data-dir", str(tiny_settings.data_dir)]
    r = runner.invoke(app, [*base, "ingest", "labelstudio", str(tmp_path / "ls.json")])
    assert r.exit_code == 0, r.output
    assert "added 1" in r.output and "1 human labels" in r.output
    assert current(ws, sha256_hex(make_png(700))) == ("cat", "human", "labelstudio:2")
