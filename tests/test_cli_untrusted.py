"""The CLI shows text stored from clients, never obeys it (issue 11, section 6): feedback
written before the API refused control characters must not drive the terminal."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.cli.common import shown
from flywheel.config import Settings
from flywheel.db import ApiKey, Feedback, Prediction
from flywheel.serve.api_keys import create_key
from flywheel.text import printable
from flywheel.workspace import open_workspace
from tests.conftest import sample_row

runner = CliRunner()
EVIL = "\x1b[2J\x1b]0;pwned\x07[bold red]boss[/]\u202e"


def test_shown_text_prints_as_written() -> None:
    out = Console(file=io.StringIO(), width=400, color_system=None)
    out.print(shown(EVIL))
    assert out.file.getvalue() == printable(EVIL) + "\n"  # type: ignore[attr-defined]


def test_annotators_and_keys_print_stored_escapes_as_text(tmp_path: Path) -> None:
    ws = open_workspace(Settings(data_dir=tmp_path / "data"))
    info, _ = create_key(ws.db, "app", "shop", "shop app")
    with ws.db.session() as s:
        s.get(ApiKey, info.id).name = EVIL  # type: ignore[union-attr]  # stored before the rule
        for n in (1, 2):
            row = sample_row(n)
            s.add(row)
            s.flush()
            pid = str(uuid.uuid4())
            s.add(Prediction(id=pid, sample_id=row.id, model_version="1", label="cat",
                             confidence=0.9, top_k=[], app_id="shop"))  # fmt: skip
            s.flush()
            for user in (EVIL, "bob"):
                s.add(Feedback(id=str(uuid.uuid4()), prediction_id=pid, user_id=user,
                               app_id="shop", kind="confirm"))  # fmt: skip
    ws.close()
    data = ["--data-dir", str(tmp_path / "data")]
    for command in (["feedback", "annotators"], ["keys", "list"]):
        r = runner.invoke(app, [*data, *command], env={"COLUMNS": "400"})
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output and "\u202e" not in r.output
        assert "\\x1b[2J\\x1b]0;pwned\\x07[bold red]boss[/]\\u202e" in r.output, r.output
