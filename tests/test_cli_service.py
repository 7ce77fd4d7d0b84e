"""``flywheel keys`` and ``flywheel serve``: the real entry point in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.serve.api_keys import AuthenticationError, authenticate
from flywheel.workspace import open_workspace
from tests.api.conftest import free_port
from tests.endpoints import wait_until_healthy

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    r = runner.invoke(app, [*data, "keys", "create", "--role", "engineer", "--tenant", "ml"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("fw_")
    key_id = token.split("_")[1]
    listed = runner.invoke(app, [*data, "keys", "list"])
    assert key_id in listed.stdout and "engineer" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout  # the secret is never shown again
    assert runner.invoke(app, [*data, "keys", "revoke", key_id]).exit_code == 0
    ws = open_workspace(Settings(data_dir=tmp_path / "data"))
    try:
        with pytest.raises(AuthenticationError, match="revoked"):
            authenticate(ws.db, token)
    finally:
        ws.close()
    bad = runner.invoke(app, [*data, "keys", "create", "--role", "root"])
    assert bad.exit_code == 1 and "unknown role" in str(bad.exception)


@pytest.mark.integration
def test_serve_answers_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(data)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    token = subprocess.run(
        [*cli, "keys", "create", "--role", "app", "--tenant", "shop"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    port = free_port()
    proc = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, 60)
        ready = httpx.get(f"{base}/readyz").json()
        assert ready["ready"] is False and ready["checks"]["model"]["ok"] is False
        assert ready["checks"]["database"]["ok"] is True
        headers = {"Authorization": f"Bearer {token}"}
        body = {"prediction_id": "none", "kind": "confirm", "user_id": "u"}
        assert httpx.post(f"{base}/v1/feedback", json=body, headers=headers).status_code == 404
        assert httpx.post(f"{base}/v1/feedback", json=body).status_code == 401
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal so supervisors see it.
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out
    assert "Traceback" not in out
