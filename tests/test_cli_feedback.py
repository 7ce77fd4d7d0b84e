"""``flywheel feedback resolve|annotators`` over a real SQLite workspace."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.db import Feedback, Label, Prediction
from flywheel.workspace import open_workspace
from tests.conftest import sample_row

runner = CliRunner()


def _sample(s, n: int, split: str = "pool") -> str:  # type: ignore[no-untyped-def]
    row = sample_row(n, split)
    s.add(row)
    return row.id


def test_resolve_writes_consensus_labels_and_annotators_reports(tmp_path: Path) -> None:
    ws = open_workspace(Settings(data_dir=tmp_path / "data"))
    with ws.db.session() as s:
        gold, pool, other = _sample(s, 1, "train"), _sample(s, 2), _sample(s, 3, "train")
        s.flush()
        s.add(Label(sample_id=gold, label="cat", source="seed", method="m"))
        s.add(Label(sample_id=other, label="dog", source="seed", method="m"))
        for sid, predicted in ((gold, "cat"), (pool, "dog")):
            pid = str(uuid.uuid4())
            s.add(Prediction(id=pid, sample_id=sid, model_version="1", label=predicted,
                             confidence=0.9, top_k=[], app_id="shop"))  # fmt: skip
            s.flush()
            for user in ("ann", "bob", "cy"):
                s.add(Feedback(id=str(uuid.uuid4()), prediction_id=pid, user_id=user,
                               app_id="shop", kind="confirm"))  # fmt: skip
    ws.close()
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(app, [*data, "feedback", "resolve"])
    assert r.exit_code == 0, r.output
    assert "2 samples with feedback from 3 annotators" in r.output
    assert "1 labels written" in r.output
    ws = open_workspace(Settings(data_dir=tmp_path / "data"))
    with ws.db.session() as s:
        written = s.scalars(select(Label).where(Label.sample_id == pool)).one()
    ws.close()
    assert (written.source, written.label) == ("feedback", "dog")
    assert written.confidence >= 0.9
    again = runner.invoke(app, [*data, "feedback", "resolve"])
    assert "0 labels written" in again.output  # idempotent
    r = runner.invoke(app, [*data, "feedback", "annotators"])
    assert r.exit_code == 0, r.output
    assert "shop/ann" in r.output and "Fleiss' kappa" in r.output
    assert "6 votes on 2 samples" in r.output
