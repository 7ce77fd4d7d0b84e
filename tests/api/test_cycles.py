"""POST /v1/cycles (queued at once, run in a background thread), GET /v1/cycles[/{id}]."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cycle_runner import CycleRunner
from flywheel.config import BrokerSettings
from flywheel.cycle.outbox import pending
from tests.api.conftest import auth

TINY = {
    "ssl_epochs": 0,
    "train_epochs": 1,
    "steps_per_epoch": 1,
    "fixmatch": "none",
    "batch_size": 16,
    "width": 4,
}


def _wait_idle(runner: CycleRunner, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while runner.active() is not None:
        assert time.monotonic() < deadline, "the runner did not finish"
        time.sleep(0.01)


def test_cycle_routes_refuse_bad_requests(client, keys, api_settings, api_workspace):
    eng = auth(keys.engineer)
    r = client.get("/v1/cycles", headers=eng)
    assert r.status_code == 200 and r.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    r = client.get("/v1/cycles/999", headers=eng)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for path in ("/v1/cycles/0", "/v1/cycles/x", "/v1/cycles?limit=0", "/v1/cycles?offset=-1"):
        assert client.get(path, headers=eng).status_code == 422, path
    for body in (
        {"learning": {"no_such_field": 1}},
        {"learning": {"train_epochs": 0}},
        {"learning": {"fixmatch": "sometimes"}},
        {"other": 1},
    ):
        r = client.post("/v1/cycles", json=body, headers=eng)
        assert r.status_code == 422, body
    for method, path in (("POST", "/v1/cycles"), ("GET", "/v1/cycles"), ("GET", "/v1/cycles/1")):
        assert client.request(method, path, headers=auth(keys.app)).status_code == 403
        assert client.request(method, path, headers=auth(keys.revoked)).status_code == 401
        assert client.request(method, path).status_code == 401
    assert client.get("/v1/cycles", headers=eng).json()["total"] == 0  # nothing was queued

    # A broker that is down: the cycle is accepted all the same and waits in the database
    # (its outbox message stays pending); a second request is refused, naming the first.
    settings = api_settings.model_copy(
        update={"broker": BrokerSettings(url="redis://127.0.0.1:1/0")}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as other:
        r = other.post("/v1/cycles", headers=eng)
        assert r.status_code == 202, r.text
        queued = other.get(r.headers["location"], headers=eng).json()
        assert queued["state"] == "queued"
        assert pending(other.app.state.ctx.ws.db) == 1
        assert "flywheel_outbox_pending 1.0" in other.get("/metrics").text
        again = other.post("/v1/cycles", headers=eng)
        assert again.status_code == 409
        assert f"cycle {queued['id']}" in again.json()["error"]["message"]


def test_one_cycle_at_a_time(client, keys, api_workspace):
    """The runner's work is stubbed: this is about queueing, not learning."""
    ctx = client.app.state.ctx
    release = threading.Event()
    promoted: list[int] = []
    seen: list[tuple[int, int]] = []

    def fake_run(cycle_id, learning):
        seen.append((cycle_id, learning.train_epochs))
        assert release.wait(10)
        return "promoted"

    ctx.cycles = CycleRunner(api_workspace, ctx.registry, lambda: promoted.append(1), fake_run)
    eng = auth(keys.engineer)
    r = client.post("/v1/cycles", json={"learning": {"train_epochs": 3}}, headers=eng)
    assert r.status_code == 202, r.text
    first = r.json()["id"]
    assert r.json()["state"] == "queued"
    assert r.headers["location"] == f"/v1/cycles/{first}" == r.json()["status_url"]

    busy = client.post("/v1/cycles", headers=eng)
    assert busy.status_code == 409
    assert f"cycle {first}" in busy.json()["error"]["message"]
    status = client.get(f"/v1/cycles/{first}", headers=eng).json()
    assert status["state"] == "queued" and status["progress"] == 0.0
    assert status["params"]["train_epochs"] == 3  # the override; the rest from the settings
    assert status["params"]["batch_size"] == api_workspace.settings.learning.batch_size

    release.set()
    _wait_idle(ctx.cycles)
    assert promoted == [1]  # the champion cache is told at once
    second = client.post("/v1/cycles", headers=eng)
    assert second.status_code == 202
    _wait_idle(ctx.cycles)
    assert seen == [(first, 3), (second.json()["id"], api_workspace.settings.learning.train_epochs)]

    page = client.get("/v1/cycles?limit=1", headers=eng).json()
    assert page["total"] == 2 and [c["id"] for c in page["items"]] == [second.json()["id"]]
    page = client.get("/v1/cycles?limit=1&offset=1", headers=eng).json()
    assert [c["id"] for c in page["items"]] == [first]
    ctx.cycles.close()
    closed = client.post("/v1/cycles", headers=eng)
    assert closed.status_code == 409 and "shutting down" in closed.json()["error"]["message"]


@pytest.mark.integration
def test_in_process_cycle_runs_to_a_decision(client, keys, make_png):
    eng = auth(keys.engineer)
    r = client.post("/v1/cycles", json={"learning": TINY}, headers=eng)
    assert r.status_code == 202, r.text
    cycle_id = r.json()["id"]
    states = []
    deadline = time.monotonic() + 120
    while True:
        c = client.get(f"/v1/cycles/{cycle_id}", headers=eng).json()
        states.append(c["state"])
        if c["state"] in ("promoted", "rejected", "failed"):
            break
        assert time.monotonic() < deadline, f"cycle stuck in {c['state']}"
        assert 0.0 <= c["progress"] <= 1.0
        time.sleep(0.1)
    assert c["state"] in ("promoted", "rejected"), c["error"]
    assert c["progress"] == 1.0 and c["error"] is None
    assert c["mlflow_run_id"] and c["dataset_version_out"]
    assert 0.0 <= c["metrics"]["test_accuracy"] <= 1.0
    version = c["metrics"]["model_version"]
    assert version == "3"  # after the fixture's v1 and v2

    models = client.get("/v1/models", headers=eng).json()
    assert models["versions"][0]["version"] == "3"
    expected = "3" if c["state"] == "promoted" else "1"
    assert models["champion"] == expected
    pred = client.post(
        "/v1/predict", files={"file": ("x.png", make_png(5), "image/png")}, headers=auth(keys.app)
    )
    assert pred.status_code == 201 and pred.json()["model_version"] == expected
    listed = client.get("/v1/cycles", headers=eng).json()
    assert listed["items"][0]["id"] == cycle_id


def test_a_cycle_running_in_another_process_is_a_conflict(client, keys, api_workspace):
    """The CLI (or another API process) holds the project's cycle lease: POST gets 409."""
    from flywheel.cycle.guard import exclusive_cycles

    with exclusive_cycles(api_workspace.db, "cli@elsewhere"):
        r = client.post("/v1/cycles", headers=auth(keys.engineer))
        assert r.status_code == 409
        assert "cli@elsewhere" in r.json()["error"]["message"]
    listed = client.get("/v1/cycles", headers=auth(keys.engineer)).json()
    assert listed["total"] == 0  # the refused request created no cycle


def test_drift_starts_a_cycle_in_process(api_workspace, monkeypatch):
    """The in-process runner's ticker: drifted inputs start a cycle (trigger "drift"), and
    only when drift.trigger_cycle is on. The drift measurement itself is tested with real
    data in tests/flywheel/test_drift.py; here it is pinned to "drifted"."""
    import dataclasses
    from datetime import UTC, datetime

    import flywheel.insights.drift
    from flywheel.db import Cycle
    from flywheel.insights.drift import DriftReport
    from flywheel.learn.registry import ModelRegistry

    checks: list[int] = []

    def drifted(ws, registry, settings, seed=0):
        checks.append(1)
        return DriftReport(500, 2000, 0.2, 0.001, 1.5, True, 0.01, "1", datetime.now(UTC))

    monkeypatch.setattr(flywheel.insights.drift, "measure_drift", drifted)
    started: list[int] = []

    def run(cycle_id, learning):
        started.append(cycle_id)
        return "rejected"

    def runner_for(trigger_cycle: bool) -> CycleRunner:
        settings = api_workspace.settings.model_copy(
            update={
                "cycles": api_workspace.settings.cycles.model_copy(
                    update={"relay_interval_s": 0.05}
                ),
                "drift": api_workspace.settings.drift.model_copy(
                    update={"trigger_cycle": trigger_cycle, "check_interval_s": 0.05}
                ),
            }
        )
        ws = dataclasses.replace(api_workspace, settings=settings)
        return CycleRunner(ws, ModelRegistry.from_settings(settings), lambda: None, run)

    off = runner_for(False)
    time.sleep(0.5)
    off.close()
    assert checks == [] and started == []  # off: never measured

    on = runner_for(True)
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.05)
    on.close()
    assert started, "drift did not start a cycle"
    with api_workspace.db.session() as s:
        assert s.get(Cycle, started[0]).trigger == "drift"
