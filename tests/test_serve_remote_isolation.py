"""``flywheel serve`` with 50 URI registrations stuck on a black-hole and a refusing
endpoint: feedback and health keep answering, every feedback is stored, and SIGTERM stops
the server. (The feedback p99 with and without them is measured in
bench/bench_remote_isolation.py, not here: a unit test asserts no timings.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from flywheel.config import Settings
from flywheel.db import Feedback, Prediction
from flywheel.serve.api_keys import create_key
from flywheel.workspace import open_workspace
from tests.api.conftest import free_port
from tests.conftest import sample_row
from tests.endpoints import S3_ENV, black_hole, refusing_port, wait_until_healthy

pytestmark = pytest.mark.integration
REGISTRATIONS = 50
FEEDBACK = 30
THREADS = 4


def _root(bucket: str, port: int) -> str:
    return f"s3://{bucket}/imgs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


def _prepare(data: Path) -> tuple[str, str, list[str]]:
    """An app key, an engineer key and FEEDBACK predictions to give feedback on."""
    ws = open_workspace(Settings(data_dir=data))
    try:
        app_key = create_key(ws.db, "app", "shop")[1]
        engineer_key = create_key(ws.db, "engineer", "ml")[1]
        ids = [str(uuid.uuid4()) for _ in range(FEEDBACK)]
        with ws.db.session() as s:
            s.add_all([sample_row(i + 1) for i in range(FEEDBACK)])
            s.flush()
            s.add_all(
                Prediction(
                    id=pid,
                    sample_id=f"{i + 1:064x}",
                    model_version="1",
                    label="a",
                    confidence=0.9,
                    top_k=[{"label": "a", "probability": 0.9}],
                    app_id="shop",
                )
                for i, pid in enumerate(ids)
            )
        return app_key, engineer_key, ids
    finally:
        ws.close()


def _pending(base: str) -> int:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return int(float(re.search(r"^flywheel_remote_reads_pending (\S+)$", text, re.M).group(1)))


def test_stuck_registrations_starve_nothing_and_sigterm_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app_key, engineer_key, prediction_ids = _prepare(data)
    port = free_port()
    with black_hole() as hole:
        refusing = refusing_port()
        env = {
            **os.environ,
            **S3_ENV,
            "OMP_NUM_THREADS": "1",
            "FLYWHEEL_INGEST__URI_ROOTS": json.dumps(
                [_root("hole", hole.port), _root("refused", refusing)]
            ),
            # Long enough that the black-hole reads are still going when SIGTERM comes.
            "FLYWHEEL_INGEST__REMOTE_READ_TIMEOUT_S": "120",
            "FLYWHEEL_INGEST__REMOTE_TOTAL_TIMEOUT_S": "300",
            "FLYWHEEL_INGEST__REMOTE_ATTEMPTS": "1",
            "FLYWHEEL_INGEST__REMOTE_THREADS": str(THREADS),
        }
        cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(data)]
        proc = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        engineer = {"Authorization": f"Bearer {engineer_key}"}
        pool = ThreadPoolExecutor(REGISTRATIONS)
        try:
            wait_until_healthy(base, proc, 60)

            def register(i: int) -> int:
                bucket = "hole" if i % 2 == 0 else "refused"
                body = {"items": [{"uri": f"s3://{bucket}/imgs/{i}.png"}]}
                try:
                    r = httpx.post(
                        f"{base}/v1/samples/uris", json=body, headers=engineer, timeout=600
                    )
                except httpx.TransportError:
                    return -1  # cut off by the shutdown
                return r.status_code

            registrations = [pool.submit(register, i) for i in range(REGISTRATIONS)]
            # Every registration is either answered or waiting on a remote read, and every
            # read thread is held by the black hole: the worst case is in place.
            deadline = time.monotonic() + 120
            while True:
                answered = sum(f.done() for f in registrations)
                if hole.connections >= THREADS and _pending(base) + answered == REGISTRATIONS:
                    break
                assert time.monotonic() < deadline, (hole.connections, answered)
                time.sleep(0.2)
            assert answered < REGISTRATIONS

            # Feedback, health and metrics all answer meanwhile (no request thread is held).
            headers = {"Authorization": f"Bearer {app_key}"}
            for i, pid in enumerate(prediction_ids):
                body = {"prediction_id": pid, "kind": "confirm", "user_id": f"u{i}"}
                r = httpx.post(f"{base}/v1/feedback", json=body, headers=headers, timeout=10)
                assert r.status_code == 201, r.text
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
            assert not all(f.done() for f in registrations)  # still stuck
        finally:
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                pytest.fail(f"the server did not stop within 10 s of SIGTERM:\n{out[-3000:]}")
            stopped = time.monotonic() - started
            pool.shutdown(wait=True)
    assert proc.returncode in (0, -signal.SIGTERM), out[-3000:]
    assert stopped < 10
    # Refused endpoint: 422 (nothing readable), unless queued behind the black hole's reads;
    # those were cut off by the shutdown (500 for a cancelled request, or the socket closed).
    codes = [f.result() for f in registrations]
    assert 422 in codes[1::2] and set(codes) <= {422, 500, -1}, codes
    ws = open_workspace(Settings(data_dir=data))
    try:
        with ws.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Feedback)) == FEEDBACK
    finally:
        ws.close()
