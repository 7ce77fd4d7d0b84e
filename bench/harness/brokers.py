"""Celery on Redis for benchmarks: a Redis database of the benchmark's own (flushed before
and after), real ``flywheel worker`` processes, a wait until every queue answers (worker
start-up is never part of a measurement), and the empty-task rate, eager against through
the broker, that bench_broker.py reports and bench_cycle_workers.py repeats."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.processes import spawn, stop


def flush(broker: str) -> None:
    """Empty the benchmark's Redis database (``broker``'s URL names it)."""
    import redis

    redis.Redis.from_url(broker).flushdb()


def start_worker(
    cli: list[str], queues: str, name: str, env: dict[str, str], out: Path | None = None
) -> subprocess.Popen:
    """``<cli> worker`` on ``queues`` with one task process, in a group of its own; ``cli``
    is the flywheel command with its global options (data dir or config file)."""
    cmd = [*cli, "worker", "--queues", queues, "--concurrency", "1", "--name", name]
    return spawn(cmd, env=env, out=out)


def wait_ready(
    broker: str,
    data_dir: Path,
    queues: list[str],
    procs: list[subprocess.Popen],
    timeout: float = 180,
) -> None:
    """Every worker answers an empty task on its queue; fails if one exits meanwhile."""
    from flywheel.config import Settings
    from workers.app import create_celery
    from workers.tasks import ping, ping_gpu

    app = create_celery(Settings(data_dir=data_dir, broker={"url": broker}))
    try:
        for queue in queues:
            task = ping if queue == "cpu" else ping_gpu
            deadline = time.monotonic() + timeout
            result = task.apply_async()
            while not result.ready():
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError("a worker exited during startup")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no worker answered on queue {queue}")
                time.sleep(0.2)
            result.get()
    finally:
        app.close()


@dataclass(frozen=True)
class PingRates:
    """Seconds for ``tasks`` empty ``ping`` tasks: called eagerly in-process, and sent
    through the broker to ``workers`` worker processes (sending alone, and until every
    result is back)."""

    tasks: int
    workers: int
    eager_s: float
    broker_sent_s: float
    broker_s: float

    @property
    def eager_tasks_per_s(self) -> float:
        return self.tasks / self.eager_s

    @property
    def broker_tasks_per_s(self) -> float:
        return self.tasks / self.broker_s

    @property
    def broker_send_per_s(self) -> float:
        return self.tasks / self.broker_sent_s

    @property
    def eager_ms_per_task(self) -> float:
        return 1000 * self.eager_s / self.tasks

    @property
    def broker_ms_per_task(self) -> float:
        """Round trip: sent, run by a worker, result back."""
        return 1000 * self.broker_s / self.tasks


def ping_rates(
    data_dir: Path, broker: str, workers: int, tasks: int, launch: Callable[[int], subprocess.Popen]
) -> PingRates:
    """Eager ``ping`` calls, then the same through ``broker`` to ``workers`` workers on the
    ``cpu`` queue, each started by ``launch(i)`` on ``data_dir``. The broker's database is
    flushed before and after; the workers are stopped even on failure."""
    from flywheel.config import Settings
    from flywheel.workspace import open_workspace
    from workers.app import create_celery
    from workers.tasks import ping

    eager_app = create_celery(Settings(data_dir=data_dir))
    t0 = time.perf_counter()
    for _ in range(tasks):
        ping.delay().get()
    eager_s = time.perf_counter() - t0
    eager_app.close()

    # Each worker migrates the database as it starts; two first migrations of one SQLite
    # file at once race (one worker dies), so the data dir is migrated here first.
    open_workspace(Settings(data_dir=data_dir)).close()
    flush(broker)
    procs = [launch(i) for i in range(workers)]
    try:
        wait_ready(broker, data_dir, ["cpu"], procs)
        app = create_celery(Settings(data_dir=data_dir, broker={"url": broker}))
        time.sleep(2)  # the first answer proves one worker up: give the others time
        t0 = time.perf_counter()
        pending = [ping.delay() for _ in range(tasks)]
        sent_s = time.perf_counter() - t0
        for result in pending:
            result.get(timeout=120)
        broker_s = time.perf_counter() - t0
        app.close()
    finally:
        stop(procs)
        flush(broker)
    return PingRates(tasks, workers, eager_s, sent_s, broker_s)
