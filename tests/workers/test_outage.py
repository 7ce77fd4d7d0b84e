"""A Redis outage while users keep sending feedback through the real API process.

The test runs its own ``redis-server`` on a free port (the shared one stays up), kills it
while feedback arrives, and starts it again on the same port.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import select

from flywheel.cycle.outbox import pending
from flywheel.db import Cycle, Feedback, GroundTruth, Sample
from tests.workers.conftest import LIVENESS_S, TEST_TIMEOUT_S, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_TIMEOUT_S)]

USERS = ("ana", "ben", "cy")


def start_redis(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=log.open("a"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(up, LIVENESS_S, f"redis on port {port}")
    return proc


def test_feedback_during_a_redis_outage_is_kept_and_reaches_the_next_cycle(
    make_deployment, tmp_path: Path
):
    port = free_port()
    redis_log = tmp_path / "redis.log"
    broker = start_redis(port, redis_log)
    try:
        dep = make_deployment(
            "outage", broker_url=f"redis://127.0.0.1:{port}/0", triggers={"feedback_count": 60}
        )
        # The worker and the API start while the key is made (their imports overlap).
        worker = dep.start_worker("w", wait=False)
        api_port = free_port()
        dep.popen("serve", "--port", str(api_port), log=dep.root / "api.log")
        key = dep.cli("keys", "create", "--role", "app", "--tenant", "shop")
        assert key.returncode == 0, key.stderr
        dep.wait_ready(worker)
        assert dep.cli("cycle", "run", "--wait").returncode == 0  # a champion to predict with
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {key.stdout.strip()}"},
            timeout=30,
        )

        def serving() -> bool:
            try:
                return api.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serving, LIVENESS_S, "the API")
        with dep.ws.db.session() as s:
            pool = s.execute(
                select(Sample.id, GroundTruth.label)
                .join(GroundTruth, GroundTruth.sample_id == Sample.id)
                .where(Sample.split == "pool")
                .order_by(Sample.id)
                .limit(30)
            ).all()
        predictions = []
        for sid, truth in pool:
            # The bytes, not the id: an app key sees only samples its tenant sent.
            data = dep.ws.blobs.get(sid)
            r = api.post("/v1/predict", files={"file": ("x.png", data, "image/png")})
            assert r.status_code == 201, r.text
            predictions.append((r.json(), truth))

        accepted: list[str] = []

        def send(batch: list) -> None:
            for pred, truth in batch:
                right = pred["label"] == truth
                for user in USERS:
                    body = {
                        "prediction_id": pred["prediction_id"],
                        "kind": "confirm" if right else "correct",
                        "label": None if right else truth,
                        "user_id": user,
                    }
                    r = api.post("/v1/feedback", json=body)
                    assert r.status_code in (200, 201), r.text
                    accepted.append(r.json()["feedback_id"])

        send(predictions[:10])  # 30 items: below the trigger's 60
        broker.kill()
        broker.wait(10)
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"]["ok"] is False
        send(predictions[10:])  # 60 more, all while Redis is down: the trigger fires now

        def queued() -> Cycle | None:
            with dep.ws.db.session() as s:
                return s.scalar(select(Cycle).where(Cycle.id == 2))

        cycle = wait_until(queued, LIVENESS_S, "the feedback trigger to queue cycle 2")
        assert cycle.trigger == "feedback"
        time.sleep(2 * dep.settings.cycles.relay_interval_s)  # relays fail meanwhile
        assert dep.cycle(2).state == "queued" and pending(dep.ws.db) == 1
        assert "flywheel_outbox_pending 1.0" in api.get("/metrics").text

        broker = start_redis(port, redis_log)  # back, empty: the outbox still has the cycle
        done = dep.wait_cycle(2)
        assert done.state in ("promoted", "rejected"), done.error
        assert pending(dep.ws.db) == 0
        with dep.ws.db.session() as s:
            stored = set(s.scalars(select(Feedback.id)))
        assert len(accepted) == 90 and set(accepted) == stored  # every 2xx is in the DB
        # ...and every one of them reached the cycle's consensus: all 30 samples resolved.
        consensus = done.outputs["consensus"]
        assert consensus["samples"] == 30
        assert consensus["labels_written"] + consensus["review"] == 30
        assert worker.proc.poll() is None  # the worker rode out the outage and reconnected
    finally:
        broker.kill()
        broker.wait(10)
