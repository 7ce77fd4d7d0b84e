"""The CLI end to end: typer's runner for the commands, a subprocess for the entry point."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flywheel.cli import app

runner = CliRunner()


def run(data_dir: Path, *args: str):
    result = runner.invoke(app, ["--data-dir", str(data_dir), *args])
    return result


def test_ingest_snapshot_show_diff_export(tmp_path: Path, make_png) -> None:
    data = tmp_path / "data"
    assert run(data, "init").exit_code == 0
    assert (data / "flywheel.db").exists()
    r = run(data, "ingest", "digits", "--labels-per-class", "2", "--test-fraction", "0.3")
    assert r.exit_code == 0, r.output
    assert "added 1797" in r.output and "0 rejected" in r.output
    r = run(data, "data", "snapshot", "-m", "seed labels")
    assert r.exit_code == 0 and "new version" in r.output
    first = r.output.split("version", 2)[-1].split()[0]

    folder = tmp_path / "more" / "7"
    folder.mkdir(parents=True)
    (folder / "x.png").write_bytes(make_png(1))
    (folder / "bad.png").write_bytes(b"nope")
    r = run(data, "ingest", "imagefolder", str(tmp_path / "more"))
    assert r.exit_code == 0 and "added 1" in r.output and "1 rejected" in r.output
    assert "bad.png" in r.output and "not a decodable image" in r.output
    assert run(data, "data", "snapshot").exit_code == 0

    r = run(data, "data", "versions")
    assert r.exit_code == 0 and first[:12] in r.output and "seed labels" in r.output
    r = run(data, "data", "show", "latest")
    assert r.exit_code == 0 and "train/seed" in r.output
    r = run(data, "data", "diff", first[:10], "latest")
    assert r.exit_code == 0 and "+1 added" in r.output and "7" in r.output
    out = tmp_path / "export.parquet"
    r = run(data, "data", "export", "latest", "--format", "parquet", "-o", str(out))
    assert r.exit_code == 0 and pq.read_table(out).num_rows == 2 * 10 + 539 + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "show", "deadbeef"], "no dataset version 'deadbeef'"),
        (["ingest", "imagefolder", "/nonexistent/dir"], "not a directory"),
        (["data", "export", "latest", "-o", "x", "--format", "xls"], "unknown format"),
        (["--config", "/nonexistent.yaml", "init"], "config file not found"),
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from flywheel.cli import main; main()",
            "--data-dir",
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    r = run(tmp_path, "demo", "--fresh")
    assert r.exit_code != 0
    assert (tmp_path / "precious.txt").exists()


def test_cycle_and_models_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "learning: {ssl_epochs: 1, train_epochs: 2, fixmatch_epochs: 1, steps_per_epoch: 2,"
        " width: 8, batch_size: 32}\n"
    )

    def cli(*args: str):
        return runner.invoke(app, ["--config", str(cfg), *args])

    assert cli("ingest", "digits", "--labels-per-class", "3").exit_code == 0
    r = cli("cycle", "run", "--cycles", "2")
    assert r.exit_code == 0, r.output
    assert "promoted v1" in r.output  # the first model always becomes champion
    r = cli("cycle", "list")
    assert r.exit_code == 0 and "promoted" in r.output
    r = cli("cycle", "status", "1")
    assert r.exit_code == 0 and "test_accuracy" in r.output and "gate" in r.output
    assert "trigger  manual" in r.output
    assert cli("cycle", "status", "99").exit_code != 0
    r = cli("models", "list")
    assert r.exit_code == 0 and "champion" in r.output and "challenger" in r.output
    # Hand-promote version 2 whatever the gate said, then roll back to version 1.
    from flywheel.config import load_settings
    from flywheel.learn.registry import ModelRegistry

    registry = ModelRegistry.from_settings(load_settings(cfg))
    if registry.champion().version != "2":
        assert cli("models", "promote", "2").exit_code == 0
    assert registry.champion().version == "2"
    r = cli("models", "rollback")
    assert r.exit_code == 0 and "version 1" in r.output
    assert "retracted" in r.output  # with the labels it was trained on
    assert registry.champion().version == "1"
