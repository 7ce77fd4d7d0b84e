"""The Celery app: eager without a broker; a real worker process on the real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from flywheel.config import Settings
from workers.app import create_celery

# A Redis database of its own, flushed around the test, so nothing leaks into others.
BROKER = "redis://127.0.0.1:6379/13"


def test_eager_without_a_broker_runs_the_same_task_code(tmp_path: Path) -> None:
    app = create_celery(Settings(data_dir=tmp_path))
    from workers.tasks import ping

    assert app.conf.task_always_eager is True
    assert ping.delay().get()["pid"] == os.getpid()


def test_reliability_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker={"url": BROKER, "visibility_timeout_s": 99})
    conf = create_celery(settings).conf
    assert conf.task_always_eager is False
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 99
    assert {q.name for q in conf.task_queues} == {"cpu", "gpu"}
    assert conf.task_routes["workers.tasks.ping_gpu"]["queue"] == "gpu"


def test_worker_needs_a_broker(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(tmp_path)]
    out = subprocess.run([*cli, "worker"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "no broker configured" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration
def test_a_real_worker_serves_both_queues_and_stops_cleanly(tmp_path: Path) -> None:
    r = redis.Redis.from_url(BROKER)
    r.flushdb()
    env = {**os.environ, "FLYWHEEL_BROKER__URL": BROKER, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [*cli, "worker", "--queues", "cpu,gpu", "--name", "test"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        app = create_celery(Settings(data_dir=tmp_path, broker={"url": BROKER}))
        from workers.tasks import ping, ping_gpu

        cpu = ping.delay().get(timeout=90)
        gpu = ping_gpu.delay().get(timeout=30)
        assert cpu["pid"] != os.getpid() and cpu["queue"] == "cpu"
        assert gpu["queue"] == "gpu"
        app.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the task in hand, then exit
        out, _ = proc.communicate(timeout=60)
        r.flushdb()
    assert proc.returncode == 0, out
    assert "ready" in out


def test_beat_schedule_follows_the_settings(tmp_path: Path) -> None:
    from workers.app import beat_schedule

    plain = beat_schedule(Settings(data_dir=tmp_path))
    assert set(plain) == {"relay-outbox"}  # the relay (and feedback trigger) only
    full = beat_schedule(
        Settings(
            data_dir=tmp_path,
            triggers={"schedule_cron": "0 3 * * *", "schedule_interval_s": 60},
            drift={"trigger_cycle": True, "check_interval_s": 900},
        )
    )
    assert set(full) == {"relay-outbox", "scheduled-cycle", "scheduled-cycle-interval",
                         "drift-watch"}  # fmt: skip
    assert full["drift-watch"]["schedule"].total_seconds() == 900
    assert full["scheduled-cycle"]["task"] == "workers.tasks.scheduled_cycle"
    with pytest.raises(Exception, match="5 fields"):
        beat_schedule(Settings(data_dir=tmp_path, triggers={"schedule_cron": "nightly"}))
