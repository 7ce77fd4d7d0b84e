"""Broker overhead: empty Celery tasks per second through Redis, next to eager calls.

Starts real ``flywheel worker`` processes (prefork, one task process each) on a Redis
database of its own, sends ``--tasks`` empty ``ping`` tasks and waits for every result;
in the same run, the same task called eagerly in-process is the baseline.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_broker.py [--workers 2] [--tasks 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "broker.json"


def start_workers(n: int, data_dir: Path, broker: str) -> list[subprocess.Popen]:
    env = {**os.environ, "FLYWHEEL_BROKER__URL": broker, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(data_dir), "worker"]
    return [
        subprocess.Popen(
            [*cli, "--queues", "cpu", "--name", f"bench{i}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    from flywheel.config import Settings
    from workers.app import create_celery

    redis.Redis.from_url(args.broker).flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        eager_app = create_celery(Settings(data_dir=data_dir))
        from workers.tasks import ping

        t0 = time.perf_counter()
        for _ in range(args.tasks):
            ping.delay().get()
        eager_s = time.perf_counter() - t0

        app = create_celery(Settings(data_dir=data_dir, broker={"url": args.broker}))
        procs = start_workers(args.workers, data_dir, args.broker)
        try:
            ping.delay().get(timeout=120)  # every worker up (the first answer proves one)
            time.sleep(2)
            t0 = time.perf_counter()
            pending = [ping.delay() for _ in range(args.tasks)]
            sent_s = time.perf_counter() - t0
            for result in pending:
                result.get(timeout=120)
            broker_s = time.perf_counter() - t0
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(60)
            app.close()
            eager_app.close()
            redis.Redis.from_url(args.broker).flushdb()
    run = {
        "tasks": args.tasks,
        "workers": args.workers,
        "eager_tasks_per_s": args.tasks / eager_s,
        "broker_tasks_per_s": args.tasks / broker_s,
        "broker_send_per_s": args.tasks / sent_s,
        "broker_ms_per_task_round_trip": 1000 * broker_s / args.tasks,
        "cpus": os.cpu_count(),
    }
    RESULTS.write_text(json.dumps(run, indent=2) + "\n")
    print("| path | tasks/s | ms per task |")
    print("|---|---:|---:|")
    eager_ms = 1000 * eager_s / args.tasks
    print(f"| eager (in-process) | {run['eager_tasks_per_s']:,.0f} | {eager_ms:.3f} |")
    print(
        f"| Redis, {args.workers} worker processes | {run['broker_tasks_per_s']:,.0f} "
        f"| {run['broker_ms_per_task_round_trip']:.3f} |"
    )


if __name__ == "__main__":
    main()
