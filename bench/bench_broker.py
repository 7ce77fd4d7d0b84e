"""Broker overhead: empty Celery tasks per second through Redis, next to eager calls.

Starts real ``flywheel worker`` processes (prefork, one task process each) on a Redis
database of its own, sends ``--tasks`` empty ``ping`` tasks and waits for every result;
in the same run, the same task called eagerly in-process is the baseline.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_broker.py [--workers 2] [--tasks 2000]
"""

from __future__ import annotations

import os
import subprocess

from harness.brokers import ping_rates, start_worker
from harness.cli import RESULTS, add_out, parser
from harness.processes import flywheel_command
from harness.results import machine, markdown_table, write_json
from harness.workspaces import scratch


def measure(workers: int, tasks: int, broker: str) -> dict[str, float | int | None]:
    """Eager calls, then ``workers`` plain ``flywheel worker`` processes on ``broker``."""
    env = {**os.environ, "FLYWHEEL_BROKER__URL": broker, "OMP_NUM_THREADS": "1"}
    with scratch() as data_dir:
        cli = flywheel_command("--data-dir", str(data_dir))

        def launch(i: int) -> subprocess.Popen:
            return start_worker(cli, "cpu", f"bench{i}", env)

        r = ping_rates(data_dir, broker, workers, tasks, launch)
    return {
        "tasks": tasks,
        "workers": workers,
        "eager_tasks_per_s": r.eager_tasks_per_s,
        "broker_tasks_per_s": r.broker_tasks_per_s,
        "broker_send_per_s": r.broker_send_per_s,
        "broker_ms_per_task_round_trip": r.broker_ms_per_task,
        "cpus": machine()["cpus"],
    }


def table(run: dict) -> str:
    """Eager against the workers, in tasks per second and milliseconds per task."""
    eager_ms = 1000 / run["eager_tasks_per_s"]
    rows = [
        ["eager (in-process)", f"{run['eager_tasks_per_s']:,.0f}", f"{eager_ms:.3f}"],
        [
            f"Redis, {run['workers']} worker processes",
            f"{run['broker_tasks_per_s']:,.0f}",
            f"{run['broker_ms_per_task_round_trip']:.3f}",
        ],
    ]
    return markdown_table(["path", "tasks/s", "ms per task"], "lrr", rows)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    add_out(ap, RESULTS / "broker.json")
    args = ap.parse_args()
    run = measure(args.workers, args.tasks, args.broker)
    write_json(args.out, run)
    print(table(run))


if __name__ == "__main__":
    main()
