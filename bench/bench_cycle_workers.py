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
mode, which only wraps functions with timers before handing over to the CLI: the four step
functions (``flywheel.cycle.steps_all.run_*_step``, as called by both ``flywheel.cycle.runner.run_cycle``
and ``workers.tasks``), the worker's task body (``workers.tasks._run_step``), and the CLI's
per-cycle calls (``run_cycle``; ``queue_cycle`` .. ``wait_for_cycle``). Each call appends
one JSON line (wall clock, pid) to a log, so the broker's overhead splits into: enqueue
(queue_cycle until the first task starts), in-task (task body minus step function: step
lease, cycle row, workspace + MLflow opened once per task process), hops (one task's end to
the next task's start: result, chain publish, delivery) and the CLI's poll (0.5 s).

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
import contextlib
import functools
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "cycle_workers.json"
PLOT = ROOT / "docs" / "bench_cycle_workers.png"
STEPS = ("consensus", "select", "train", "finish")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
LOG_ENV = "BENCH_CYCLE_LOG"
# Fields of the cycles row that both paths must agree on.
COMPARED = (
    "state",
    "dataset_version_in",
    "dataset_version_out",
    "test_accuracy",
    "test_ece",
    "champion_accuracy",
    "model_version",
    "accepted",
    "needs_review",
    "pseudo_precision",
    "pseudo_coverage",
    "labels_by_source",
    "gate",
)


# --- child mode: the real CLI with timers around the functions we measure --------------------
def _log(event: dict[str, Any]) -> None:
    line = json.dumps({**event, "pid": os.getpid()}) + "\n"
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one O_APPEND write: lines of processes never interleave
    finally:
        os.close(fd)


def _timed(kind: str, name: str, fn: Any, cycle_arg: int | None) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.time(), time.process_time()
        ok = False
        result = None
        try:
            result = fn(*args, **kwargs)
            ok = True
            return result
        finally:
            cycle_id = args[cycle_arg] if cycle_arg is not None else None
            if kind == "queue":
                cycle_id = result
            elif kind == "run_cycle":
                cycle_id = getattr(result, "cycle_id", None)
            _log(
                {
                    "kind": kind,
                    "name": args[1] if kind == "task" else name,
                    "cycle_id": cycle_id,
                    "t0": t0,
                    "t1": time.time(),
                    "cpu_s": time.process_time() - c0,  # this process, all its threads
                    "ok": ok,
                }
            )

    return wrapper


def install_timers() -> None:
    """Wrap the step functions where both paths look them up, then the per-cycle calls."""
    import flywheel.cli.cycles as cli_cycles
    import flywheel.cycle.runner as cycle
    import flywheel.cycle.steps_all as steps
    import workers.tasks as tasks

    for step in STEPS:
        attr = f"run_{step}_step"
        timed = _timed("step", step, getattr(steps, attr), 1 if step == "consensus" else 2)
        for module in (steps, cycle, tasks):
            setattr(module, attr, timed)
    tasks._run_step = _timed("task", "task", tasks._run_step, 2)  # (task, step, cycle_id, fn)
    cycle.run_cycle = _timed("run_cycle", "eager", cycle.run_cycle, None)
    cli_cycles.queue_cycle = _timed("queue", "queue", cli_cycles.queue_cycle, None)
    cli_cycles.wait_for_cycle = _timed("wait", "wait", cli_cycles.wait_for_cycle, 1)


def child(argv: list[str]) -> None:
    install_timers()
    from flywheel.cli import main as cli_main

    sys.argv = ["flywheel", *argv]
    cli_main()


# --- the parent: processes, data dirs, databases ---------------------------------------------
def child_env(log: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", LOG_ENV: str(log), "PYTHONUNBUFFERED": "1"}


def cli(
    cfg: Path, args: list[str], log: Path, out: Path, timeout: float = 900
) -> tuple[float, str]:
    """Run the flywheel CLI (child mode) to completion; its wall seconds and output."""
    cmd = [sys.executable, __file__, "child", "-c", str(cfg), *args]
    t0 = time.perf_counter()
    with out.open("w") as f:
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(log), start_new_session=True
        )
        try:
            rc = proc.wait(timeout)
        except BaseException:
            stop([proc])
            raise
    seconds = time.perf_counter() - t0
    text = out.read_text()
    if rc != 0:
        raise RuntimeError(f"`flywheel {' '.join(args)}` exited {rc}:\n{text[-3000:]}")
    return seconds, text


def start_worker(cfg: Path, queues: str, name: str, log: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "child", "-c", str(cfg), "worker", "--queues", queues]
    cmd += ["--concurrency", "1", "--name", name]
    with out.open("w") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(log), start_new_session=True
        )


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (worker + its pool), then SIGKILL what is left."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the pool children too, if any outlived it
        p.wait()


def flush(broker: str) -> None:
    import redis

    redis.Redis.from_url(broker).flushdb()


def wait_ready(broker: str, data_dir: Path, queues: list[str], procs: list) -> None:
    """Every worker answers an empty task on its queue (startup is not part of a cycle)."""
    from flywheel.config import Settings
    from workers.app import create_celery
    from workers.tasks import ping, ping_gpu

    app = create_celery(Settings(data_dir=data_dir, broker={"url": broker}))
    try:
        for queue in queues:
            task = ping if queue == "cpu" else ping_gpu
            deadline = time.monotonic() + 180
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


def pg_database(name: str, drop_only: bool = False) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def write_config(path: Path, data_dir: Path, db_url: str | None, broker: str | None, args) -> None:
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


def read_cycles(cfg: Path) -> dict[int, dict[str, Any]]:
    from sqlalchemy import select

    from flywheel.config import load_settings
    from flywheel.db import Cycle
    from flywheel.workspace import open_workspace

    ws = open_workspace(load_settings(cfg))
    try:
        with ws.db.session() as s:
            rows = s.scalars(select(Cycle).order_by(Cycle.id)).all()
            out = {}
            for c in rows:
                m = c.metrics or {}
                row = {"state": c.state, "error": c.error}
                row["dataset_version_in"] = c.dataset_version_in
                row["dataset_version_out"] = c.dataset_version_out
                for key in COMPARED[3:]:
                    row[key] = m.get(key)
                out[c.id] = row
    finally:
        ws.close()
    return out


def source_hashes() -> dict[str, str]:
    """The code both paths run: a result is only comparable under one version of it."""
    files = sorted((ROOT / "flywheel").rglob("*.py")) + sorted((ROOT / "workers").rglob("*.py"))
    return {
        str(f.relative_to(ROOT)): hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in files
    }


def fingerprint(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def run_path(path: str, db: str, tmp: Path, args) -> dict[str, Any]:
    """One path on a fresh data dir (and database): ingest, N cycles, timings, rows."""
    base = tmp / f"{db}-{path}"
    base.mkdir()
    log = base / "timers.jsonl"
    db_url = pg_database(f"bench_cycle_workers_{path}") if db == "postgresql" else None
    broker = args.broker if path == "broker" else None
    cfg = base / "cfg.yaml"
    write_config(cfg, base / "data", db_url, broker, args)
    cli(cfg, ["ingest", "digits"], base / "ingest.log", base / "ingest.out")
    procs: list[subprocess.Popen] = []
    try:
        if broker:
            flush(broker)
            procs.append(start_worker(cfg, "cpu", "bench-cpu", log, base / "worker-cpu.log"))
            procs.append(start_worker(cfg, "gpu", "bench-gpu", log, base / "worker-gpu.log"))
            wait_ready(broker, base / "data", ["cpu", "gpu"], procs)
        load0 = os.getloadavg()[0]
        wall, _ = cli(cfg, ["cycle", "run", "-n", str(args.cycles)], log, base / "cycle.out")
        load1 = os.getloadavg()[0]
    finally:
        stop(procs)
        if broker:
            flush(broker)
    rows = read_cycles(cfg)
    if db_url:
        pg_database(f"bench_cycle_workers_{path}", drop_only=True)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return {
        "path": path,
        "db": db,
        "cli_wall_s": wall,
        "loadavg_1m_before_after": [load0, load1],
        "cycles": timings(path, events),
        "rows": {str(k): v for k, v in rows.items()},
    }


def timings(path: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cycle: wall, step function seconds, and where the rest went."""
    by_cycle: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        if e["cycle_id"] is not None:
            by_cycle.setdefault(int(e["cycle_id"]), []).append(e)
    out = []
    for cycle_id in sorted(by_cycle):
        evs = by_cycle[cycle_id]
        steps = {e["name"]: e for e in evs if e["kind"] == "step" and e["ok"]}
        step_s = {name: steps[name]["t1"] - steps[name]["t0"] for name in STEPS}
        step_cpu_s = {name: steps[name]["cpu_s"] for name in STEPS}
        pids = {name: steps[name]["pid"] for name in STEPS}
        row: dict[str, Any] = {"cycle_id": cycle_id, "step_s": step_s, "step_cpu_s": step_cpu_s}
        row["step_pids"] = pids
        if path == "eager":
            run = next(e for e in evs if e["kind"] == "run_cycle")
            row["wall_s"] = run["t1"] - run["t0"]
            row["overhead"] = {"eager": row["wall_s"] - sum(step_s.values())}
        else:
            queued = next(e for e in evs if e["kind"] == "queue")
            waited = next(e for e in evs if e["kind"] == "wait")
            tasks = sorted((e for e in evs if e["kind"] == "task"), key=lambda e: e["t0"])
            ends = {e["name"]: e for e in evs if e["kind"] == "step"}
            in_task = sum(t["t1"] - t["t0"] for t in tasks) - sum(step_s.values())
            hops = sum(b["t0"] - a["t1"] for a, b in itertools.pairwise(tasks))
            row["wall_s"] = waited["t1"] - queued["t0"]
            row["done_in_db_s"] = tasks[-1]["t1"] - queued["t0"]
            row["tasks"] = len(tasks)
            row["overhead"] = {
                "enqueue": tasks[0]["t0"] - queued["t0"],
                "in_task": in_task,
                "hops": hops,
                "cli_poll": waited["t1"] - tasks[-1]["t1"],
            }
            row["in_task_by_step"] = {}
            for t in tasks:
                # a task contains exactly one step function call of its own pid and window
                inner = [
                    e
                    for e in ends.values()
                    if e["pid"] == t["pid"] and t["t0"] <= e["t0"] and e["t1"] <= t["t1"]
                ]
                if inner:
                    name = inner[0]["name"]
                    row["in_task_by_step"][name] = (t["t1"] - t["t0"]) - step_s[name]
        row["overhead_s"] = row["wall_s"] - sum(step_s.values())
        out.append(row)
    return out


def compare(eager: dict[str, Any], broker: dict[str, Any]) -> list[str]:
    """Every field of every cycle that differs between the two paths."""
    diffs = []
    rows_e, rows_b = eager["rows"], broker["rows"]
    if sorted(rows_e) != sorted(rows_b):
        diffs.append(f"cycle ids differ: eager {sorted(rows_e)} broker {sorted(rows_b)}")
    for cid in sorted(set(rows_e) & set(rows_b), key=int):
        for key in COMPARED:
            if rows_e[cid].get(key) != rows_b[cid].get(key):
                diffs.append(
                    f"cycle {cid} {key}: eager {rows_e[cid].get(key)!r} "
                    f"broker {rows_b[cid].get(key)!r}"
                )
    return diffs


# --- empty tasks: bench_broker.py's measurement, in this run ----------------------------------
def ping_rate(tmp: Path, broker: str, workers: int, n: int) -> dict[str, Any]:
    """Eager ``ping`` calls, then ``workers`` ``--queues cpu`` workers (as bench_broker.py)."""
    from flywheel.config import Settings
    from workers.app import create_celery
    from workers.tasks import ping

    data_dir = tmp / "ping"
    data_dir.mkdir()
    eager_app = create_celery(Settings(data_dir=data_dir))
    t0 = time.perf_counter()
    for _ in range(n):
        ping.delay().get()
    eager_s = time.perf_counter() - t0
    eager_app.close()

    cfg = data_dir / "cfg.yaml"
    cfg.write_text(f"data_dir: {data_dir}\nbroker:\n  url: {broker}\n")
    flush(broker)
    log = data_dir / "timers.jsonl"
    procs = [
        start_worker(cfg, "cpu", f"ping{i}", log, data_dir / f"worker{i}.log")
        for i in range(workers)
    ]
    try:
        wait_ready(broker, data_dir, ["cpu"], procs)
        app = create_celery(Settings(data_dir=data_dir, broker={"url": broker}))
        time.sleep(2)  # the other worker(s) up too
        t0 = time.perf_counter()
        pending = [ping.delay() for _ in range(n)]
        for result in pending:
            result.get(timeout=120)
        broker_s = time.perf_counter() - t0
        app.close()
    finally:
        stop(procs)
        flush(broker)
    return {
        "tasks": n,
        "workers": workers,
        "eager_tasks_per_s": n / eager_s,
        "eager_ms_per_task": 1000 * eager_s / n,
        "broker_tasks_per_s": n / broker_s,
        "broker_ms_per_task": 1000 * broker_s / n,
    }


# --- report ----------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{1000 * seconds:,.0f}"


def report(run: dict[str, Any]) -> None:
    st = run["settings"]
    print(
        f"\nlearning: ssl_epochs {st['ssl_epochs']}, train_epochs {st['train_epochs']}, "
        f"fixmatch_epochs {st['fixmatch_epochs']}; {st['data']}; OMP_NUM_THREADS=1; "
        f"{run['cpus']} CPUs\n"
    )
    print(
        "| db | cycle | eager s | 2 workers s | workers / eager | step CPU s eager / workers "
        "| overhead eager ms | overhead workers ms | enqueue / in-task / hops / CLI poll ms "
        "| same results |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for db, res in run["results"].items():
        e_cycles, b_cycles = res["eager"]["cycles"], res["broker"]["cycles"]
        for e, b in zip(e_cycles, b_cycles, strict=True):
            o = b["overhead"]
            parts = " / ".join(_ms(o[k]) for k in ("enqueue", "in_task", "hops", "cli_poll"))
            mine = [d for d in res["diffs"] if d.startswith(f"cycle {e['cycle_id']} ")]
            print(
                f"| {db} | {e['cycle_id']} | {e['wall_s']:.1f} | {b['wall_s']:.1f} "
                f"| {b['wall_s'] / e['wall_s']:.2f} | {sum(e['step_cpu_s'].values()):.1f} / "
                f"{sum(b['step_cpu_s'].values()):.1f} | {_ms(e['overhead_s'])} "
                f"| {_ms(b['overhead_s'])} | {parts} | {'NO' if mine else 'yes'} |"
            )
        te = sum(c["wall_s"] for c in e_cycles)
        tb = sum(c["wall_s"] for c in b_cycles)
        print(f"| {db} | all | {te:.1f} | {tb:.1f} | {tb / te:.2f} | | | | | |")

    print(
        "\n| db | cycles | workers' overhead per cycle ms | of which CLI poll ms "
        "| per step without poll ms | enqueue ms | in-task ms per task | hop ms "
        "| of the eager cycle | ratio at equal step times |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for db, res in run["results"].items():
        pairs = list(zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True))
        for label, chosen in (("1 (first tasks)", pairs[:1]), ("2+ (steady)", pairs[1:])):
            if not chosen:
                continue
            n = len(chosen)

            def mean(fn: Any, chosen: list = chosen, n: int = n) -> float:
                return sum(fn(e, b) for e, b in chosen) / n

            ob = mean(lambda e, b: b["overhead_s"])
            oe = mean(lambda e, b: e["overhead_s"])
            we = mean(lambda e, b: e["wall_s"])
            poll = mean(lambda e, b: b["overhead"]["cli_poll"])
            enqueue = mean(lambda e, b: b["overhead"]["enqueue"])
            in_task = mean(lambda e, b: b["overhead"]["in_task"] / b["tasks"])
            hop = mean(lambda e, b: b["overhead"]["hops"] / (b["tasks"] - 1))
            print(
                f"| {db} | {label} | {_ms(ob)} | {_ms(poll)} | {_ms((ob - poll) / len(STEPS))} "
                f"| {_ms(enqueue)} | {_ms(in_task)} | {_ms(hop)} | {100 * ob / we:.1f} % "
                f"| {1 + (ob - oe) / we:.3f} |"
            )

    print("\nstep wall s (CPU s), eager -> workers:")
    for db, res in run["results"].items():
        for e, b in zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True):
            steps = ", ".join(
                f"{s} {e['step_s'][s]:.2f} ({e['step_cpu_s'][s]:.2f}) -> "
                f"{b['step_s'][s]:.2f} ({b['step_cpu_s'][s]:.2f})"
                for s in STEPS
            )
            print(f"  {db} cycle {e['cycle_id']}: {steps}")
            in_task = {k: round(1000 * v) for k, v in b["in_task_by_step"].items()}
            print(f"    workers' in-task ms by step: {in_task}")
        for path in ("eager", "broker"):
            r = res[path]
            print(
                f"  {db} {path}: CLI process wall {r['cli_wall_s']:.1f} s, "
                f"load average {r['loadavg_1m_before_after'][0]:.1f} -> "
                f"{r['loadavg_1m_before_after'][1]:.1f}"
            )
    print("\nresults per cycle (dataset version out, test accuracy, state):")
    for db, res in run["results"].items():
        print(f"  {db}: flywheel/ + workers/ sources {res.get('code', '?')}")
        for cid, row in res["eager"]["rows"].items():
            other = res["broker"]["rows"].get(cid, {})
            print(
                f"  {db} cycle {cid}: eager {row['dataset_version_out'][:12]} "
                f"{row['test_accuracy']:.6f} {row['state']} | workers "
                f"{(other.get('dataset_version_out') or '-')[:12]} "
                f"{other.get('test_accuracy') or float('nan'):.6f} {other.get('state')}"
            )
        for d in res["diffs"]:
            print(f"  DIFFERENT: {db} {d}")
        if res.get("code_changed_during_run"):
            print(
                f"  WARNING: {db}: these files changed while it ran, so the two paths may "
                f"have run different code: {', '.join(res['code_changed_during_run'])}"
            )
    p = run["ping"]
    print("\n| empty task | tasks/s | ms per task |\n|---|---:|---:|")
    print(f"| eager (in-process) | {p['eager_tasks_per_s']:,.0f} | {p['eager_ms_per_task']:.2f} |")
    print(
        f"| Redis, {p['workers']} worker processes | {p['broker_tasks_per_s']:,.0f} "
        f"| {p['broker_ms_per_task']:.2f} |"
    )


def plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dbs = list(run["results"])
    fig, axes = plt.subplots(1, len(dbs), figsize=(5.5 * len(dbs), 3.8), sharey=True)
    axes = [axes] if len(dbs) == 1 else list(axes)
    colors = {"consensus": "#9ecae1", "select": "#3182bd", "train": "#31a354"}
    colors |= {"finish": "#a1d99b", "overhead": "#e6550d"}
    for ax, db in zip(axes, dbs, strict=True):
        res = run["results"][db]
        labels, x = [], 0
        for e, b in zip(res["eager"]["cycles"], res["broker"]["cycles"], strict=True):
            for name, c in (("eager", e), ("workers", b)):
                bottom = 0.0
                for part in (*STEPS, "overhead"):
                    h = c["overhead_s"] if part == "overhead" else c["step_s"][part]
                    ax.bar(x, h, bottom=bottom, color=colors[part], width=0.8,
                           label=part if x == 0 else None)  # fmt: skip
                    bottom += h
                ax.text(x, bottom, f"{c['wall_s']:.1f}", ha="center", va="bottom", fontsize=7)
                labels.append(f"{name}\n#{c['cycle_id']}")
                x += 1
            x += 0.5
        ax.set_xticks(_ticks(len(res["eager"]["cycles"])))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(f"{db}: cycle wall time, eager vs 2 workers")
        ax.set_ylabel("seconds")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _ticks(n: int) -> list[float]:
    ticks, x = [], 0.0
    for _ in range(n):
        ticks += [x, x + 1]
        x += 2.5
    return ticks


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--ssl-epochs", type=int, default=5)
    parser.add_argument("--train-epochs", type=int, default=5)
    parser.add_argument("--fixmatch-epochs", type=int, default=5)
    parser.add_argument("--ping-tasks", type=int, default=2000)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument("--keep", type=Path, help="keep data dirs and logs here")
    parser.add_argument("--report", type=Path, help="only print the tables of a JSON result")
    args = parser.parse_args()
    if args.report:
        run = json.loads(args.report.read_text())
        report(run)
        if args.plot:
            plot(run, args.plot)
        return
    os.environ["OMP_NUM_THREADS"] = "1"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks

    started = time.perf_counter()
    tmp_ctx = tempfile.TemporaryDirectory() if args.keep is None else None
    tmp = Path(tmp_ctx.name) if tmp_ctx else args.keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
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
        ping = ping_rate(tmp, args.broker, 2, args.ping_tasks)
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()
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
        "ping": ping,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(run, indent=2) + "\n")
    report(run)
    if args.plot:
        plot(run, args.plot)
    print(f"\n{run['bench_seconds']:.0f} s in all; JSON {args.out}")


if __name__ == "__main__":
    main()
