"""Cycle wall time: eager (in-process CLI) against Celery workers on Redis, same data.

For each database (SQLite, the embedded default, and PostgreSQL, what a deployment uses)
and each path, on a fresh data dir: ``flywheel ingest digits``, then ``flywheel cycle run
-n N`` as the user runs it:

- **eager**: no broker, the CLI runs the four steps in its own process;
- **broker**: ``broker.url`` set, the CLI queues each cycle and waits (``--wait``) while two
  worker processes run the chain, the deployment of ``docker-compose.yml`` scaled to two
  cores: ``flywheel worker --queues cpu`` (consensus, finish) and ``flywheel worker
  --queues gpu`` (select, train), one task process each.

Every child process is the real ``flywheel`` CLI, started through this file's ``child``
mode, which only wraps functions with timers before handing over to the CLI
(``cycle_timers.py``): the four step functions (``run_<step>_step``, wherever
``flywheel.cycle.runner.run_cycle`` and ``workers.tasks`` look them up), the worker's task
body (``workers.tasks._run_step``), and the CLI's per-cycle calls (``run_cycle``;
``queue_cycle`` .. ``wait_for_cycle``). Each call appends one JSON line (wall clock, pid) to
a log, so the broker's overhead splits into: enqueue (queue_cycle until the first task
starts), in-task (task body minus step function: step lease, cycle row, workspace + MLflow
opened once per task process), hops (one task's end to the next task's start: result, chain
publish, delivery) and the CLI's poll (0.5 s).

Then the same empty-task measurement as ``bench/bench_broker.py`` (eager ``ping`` calls,
then two ``--queues cpu`` workers), so the table has both. Both paths must produce the same
dataset versions, test accuracies and gate decisions; any difference is printed.

Redis: a database of its own (``--broker``, default db 15), flushed before and after.
PostgreSQL: ``bench_cycle_workers_{eager,broker}`` on 127.0.0.1:5432 (user postgres),
created fresh and dropped. Every worker is started in a process group of its own and the
group is killed (SIGTERM, then SIGKILL) even when the bench fails.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_cycle_workers.py \
        [--db sqlite postgresql] [--cycles 3] [--ssl-epochs 5] [--train-epochs 5]
    .venv/bin/python bench/bench_cycle_workers.py --report bench/results/cycle_workers.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cycle_report import plot, report
from cycle_timers import LOG_ENV, child
from cycle_timings import compare, read_cycles, timings
from harness.brokers import flush, ping_rates, start_worker, wait_ready
from harness.cli import DOCS, RESULTS, ROOT, add_out, child_args, parser
from harness.databases import postgres_database
from harness.processes import flywheel_command, run_logged, stop, stop_on_sigterm
from harness.results import read_json, write_json
from harness.workspaces import scratch


def child_env(log: Path) -> dict[str, str]:
    """A child's environment: one thread for OMP, its timers logging to ``log``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", LOG_ENV: str(log), "PYTHONUNBUFFERED": "1"}


def cli(cfg: Path, *args: str) -> list[str]:
    """The flywheel CLI in this file's child mode (timers), on config ``cfg``."""
    return flywheel_command("-c", str(cfg), *args, entry=__file__)


def write_config(
    path: Path, data_dir: Path, db_url: str | None, broker: str | None, args: argparse.Namespace
) -> None:
    """The YAML settings of one path: data dir, learning epochs, database, broker."""
    import yaml

    cfg: dict[str, Any] = {
        "data_dir": str(data_dir),
        "learning": {
            "ssl_epochs": args.ssl_epochs,
            "train_epochs": args.train_epochs,
            "fixmatch_epochs": args.fixmatch_epochs,
        },
    }
    if db_url:
        cfg["database"] = {"url": db_url}
    if broker:
        cfg["broker"] = {"url": broker}
    path.write_text(yaml.safe_dump(cfg))


def source_hashes() -> dict[str, str]:
    """The code both paths run: a result is only comparable under one version of it."""
    files = sorted((ROOT / "flywheel").rglob("*.py")) + sorted((ROOT / "workers").rglob("*.py"))
    return {
        str(f.relative_to(ROOT)): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files
    }


def fingerprint(hashes: dict[str, str]) -> str:
    """One short hash of all the sources' hashes."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The files whose hash differs (added, removed or edited)."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def run_path(path: str, db: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One path on a fresh data dir (and database): ingest, N cycles, timings, rows."""
    base = tmp / f"{db}-{path}"
    base.mkdir()
    log = base / "timers.jsonl"
    db_name = f"bench_cycle_workers_{path}"
    db_url = postgres_database(db_name) if db == "postgresql" else None
    broker = args.broker if path == "broker" else None
    cfg = base / "cfg.yaml"
    write_config(cfg, base / "data", db_url, broker, args)
    run_logged(cli(cfg, "ingest", "digits"), base / "ingest.out", child_env(base / "ingest.log"))
    procs: list[subprocess.Popen] = []
    try:
        if broker:
            flush(broker)
            for queue in ("cpu", "gpu"):
                worker_log = base / f"worker-{queue}.log"
                procs.append(
                    start_worker(cli(cfg), queue, f"bench-{queue}", child_env(log), worker_log)
                )
            wait_ready(broker, base / "data", ["cpu", "gpu"], procs)
        load0 = os.getloadavg()[0]
        cycles = cli(cfg, "cycle", "run", "-n", str(args.cycles))
        wall, _ = run_logged(cycles, base / "cycle.out", child_env(log))
        load1 = os.getloadavg()[0]
    finally:
        stop(procs)
        if broker:
            flush(broker)
    rows = read_cycles(cfg)
    if db_url:
        postgres_database(db_name, drop_only=True)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return {
        "path": path,
        "db": db,
        "cli_wall_s": wall,
        "loadavg_1m_before_after": [load0, load1],
        "cycles": timings(path, events),
        "rows": {str(k): v for k, v in rows.items()},
    }


def ping(tmp: Path, broker: str, workers: int, n: int) -> dict[str, Any]:
    """bench_broker.py's empty-task rates, with this bench's workers."""
    data_dir = tmp / "ping"
    data_dir.mkdir()
    cfg = data_dir / "cfg.yaml"
    cfg.write_text(f"data_dir: {data_dir}\nbroker:\n  url: {broker}\n")
    env = child_env(data_dir / "timers.jsonl")

    def launch(i: int) -> subprocess.Popen:
        return start_worker(cli(cfg), "cpu", f"ping{i}", env, data_dir / f"worker{i}.log")

    r = ping_rates(data_dir, broker, workers, n, launch)
    keys = ("eager_tasks_per_s", "eager_ms_per_task", "broker_tasks_per_s", "broker_ms_per_task")
    return {"tasks": n, "workers": workers} | {k: getattr(r, k) for k in keys}


def main() -> None:
    if (argv := child_args(sys.argv, "child")) is not None:
        child(argv)
        return
    ap = parser(__doc__)
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"])  # fmt: skip
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--ssl-epochs", type=int, default=5)
    ap.add_argument("--train-epochs", type=int, default=5)
    ap.add_argument("--fixmatch-epochs", type=int, default=5)
    ap.add_argument("--ping-tasks", type=int, default=2000)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    add_out(ap, RESULTS / "cycle_workers.json")
    ap.add_argument("--plot", type=Path, default=DOCS / "bench_cycle_workers.png")
    ap.add_argument("--keep", type=Path, help="keep data dirs and logs here")
    ap.add_argument("--report", type=Path, help="only print the tables of a JSON result")
    args = ap.parse_args()
    if args.report:
        run = read_json(args.report)
        report(run)
        if args.plot:
            plot(run, args.plot)
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    stop_on_sigterm()

    started = time.perf_counter()
    with scratch(keep=args.keep) as tmp:
        results = {}
        code = source_hashes()
        for db in args.db:
            eager = run_path("eager", db, tmp, args)
            broker = run_path("broker", db, tmp, args)
            results[db] = {"eager": eager, "broker": broker, "diffs": compare(eager, broker)}
            now = source_hashes()
            results[db]["code_changed_during_run"] = changed(code, now)
            results[db]["code"] = fingerprint(now)
            code = now
        ping_result = ping(tmp, args.broker, 2, args.ping_tasks)
    run = {
        "settings": {
            "ssl_epochs": args.ssl_epochs,
            "train_epochs": args.train_epochs,
            "fixmatch_epochs": args.fixmatch_epochs,
            "cycles": args.cycles,
            "data": "sklearn digits, ingest digits defaults (5 labels/class, test 0.3, seed 0)",
            "workers": "one --queues cpu, one --queues gpu, --concurrency 1 each",
            "OMP_NUM_THREADS": 1,
        },
        "cpus": os.cpu_count(),
        "bench_seconds": time.perf_counter() - started,
        "results": results,
        "ping": ping_result,
    }
    write_json(args.out, run)
    report(run)
    if args.plot:
        plot(run, args.plot)
    print(f"\n{run['bench_seconds']:.0f} s in all; JSON {args.out}")


if __name__ == "__main__":
    main()
