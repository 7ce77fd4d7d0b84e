"""Durable feedback writes over real HTTP: Flywheel's ``POST /v1/feedback`` against a bare
FastAPI endpoint that parses the same body and writes nothing, same uvicorn settings, same run.

Each server runs alone in a subprocess (uvicorn, uvloop + httptools, ``--workers`` 1, no
access log). The load generator is this process: ``--clients`` keep-alive connections, each
sending feedback with a fresh Idempotency-Key as soon as the previous answer arrives, for
``--warmup`` + ``--seconds``; only the last ``--seconds`` are measured. The default generator
is a raw HTTP/1.1 client over asyncio streams (uvloop, ~50 us of CPU a request): httpx's
AsyncClient measured ~320 req/s at 100 % of a core here, so it would be the bottleneck
(``--generator httpx`` to see). Before each phase the script waits for the box to be quiet
(``--quiet``): other jobs on 2 cores would be measured with us. After the run the Flywheel
server is killed with SIGKILL and the database must hold exactly one row per 2xx answer.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feedback.py                  # SQLite
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_feedback.py \\
        --db postgresql+psycopg://postgres@127.0.0.1:5432/test                  # PostgreSQL
    .venv/bin/python bench/bench_feedback.py --report                           # the table

Results are merged into ``bench/results/feedback.json`` (one entry per database and label).
``--profile`` runs cProfile in the Flywheel server's event loop and writer during the measured
window and prints where the time goes; ``--patch`` isolates a layer's cost (see PATCHES in
``feedback_server.py``). The servers are in ``feedback_server.py``, the load generator in
``feedback_load.py``, the window's figures and the table in ``feedback_report.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback_load import Load, bodies, loop_factory
from feedback_report import markdown, print_phase, print_profile, window_result
from feedback_server import PATCHES
from harness.cli import RESULTS, ROOT, add_out, parser, self_command
from harness.databases import PG_URL, count_rows, postgres_schema, sqlite_url
from harness.network import free_port, wait_healthy
from harness.processes import kill, spawn
from harness.resources import tree_cpu, wait_for_quiet
from harness.results import machine, merge_run, read_json
from harness.workspaces import feedback_project, scratch

from flywheel.config import Settings
from flywheel.db import Feedback

SERVER = Path(__file__).with_name("feedback_server.py")  # run as a script: it imports little
TARGET_RPS, TARGET_P99_MS = 1000, 50.0
TENANT = "bench"


def start_server(kind: str, env: dict[str, str], workers: int) -> tuple[Any, int]:
    """Server ``kind`` answering on a free port and settled (every worker idle)."""
    port = free_port()
    cmd = self_command(str(SERVER), kind, str(port), str(workers))
    # A session of its own: SIGKILL goes to the whole group (uvicorn's workers too).
    proc = spawn(cmd, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=60)
        # One worker answering is not all of them started: wait until the processes go idle.
        while time.monotonic() < deadline:
            c0 = tree_cpu(proc.pid)
            time.sleep(0.5)
            if tree_cpu(proc.pid) - c0 < 0.05:
                return proc, port
        raise RuntimeError(f"the {kind} server did not settle")
    except BaseException:
        kill(proc)
        raise


def run_phase(
    kind: str, env: dict[str, str], token: str, payloads: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """One server under load: start it, wait for a quiet box, measure, SIGKILL it."""
    proc, port = start_server(kind, env, args.workers)
    if args.quiet > 0:
        wait_for_quiet(args.quiet, args.quiet_wait)
    try:
        # Per-process statistics: only meaningful with one worker.
        stats = "/_bench/stats" if kind == "flywheel" and args.workers == 1 else None
        load = Load(port, token, payloads, args.clients, stats)
        samples = asyncio.Runner(loop_factory=loop_factory()).run(
            load.run(proc.pid, args.warmup, args.seconds, args.generator)
        )
        result = window_result(load, samples, args.seconds)
        result["ok_answers"] = sum(v for k, v in load.statuses.items() if 200 <= k < 300)
        if args.profile and kind == "flywheel":
            # The writer dumps its profile at its first commit after the window.
            deadline = time.monotonic() + 5
            while not Path(env["BENCH_PROFILE"], "writer.prof").exists():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    finally:
        # SIGKILL: what was answered must already be durable; no graceful flush may help.
        kill(proc)
    return result


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare a project, measure both servers on it, check durability: the run's entry."""
    with ExitStack() as stack:
        work = stack.enter_context(scratch("flywheel-bench-feedback-", parent=args.tmp))
        if args.db == "sqlite":
            db_url, db_kind = sqlite_url(work / "data" / "flywheel.db"), "sqlite"
        else:
            db_url, db_kind = stack.enter_context(postgres_schema(args.db)), "postgresql"
        t0 = time.perf_counter()
        settings = Settings(data_dir=work / "data", database={"url": db_url})
        project = feedback_project(settings, args.predictions, TENANT)
        predictions = project.prediction_ids
        print(f"prepared {len(predictions)} predictions in {time.perf_counter() - t0:.1f} s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env |= {
            "FLYWHEEL_DATA_DIR": str(work / "data"),
            "FLYWHEEL_DATABASE__URL": db_url,
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "BENCH_PATCH": ",".join(args.patch),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        payloads = bodies(predictions)
        if args.profile:
            env["BENCH_PROFILE"] = str(work)

        results: dict[str, Any] = {}
        for kind in ("baseline", "flywheel"):
            print(f"{kind}: {args.warmup:g} s warm-up + {args.seconds:g} s, {args.clients} clients")
            results[kind] = run_phase(kind, env, project.app_key, payloads, args)
            print_phase(results[kind])
        rows = count_rows(db_url, Feedback)
        stubbed = "stub-writer" in args.patch
        fw = results["flywheel"]
        run = {
            "label": args.label
            or "+".join(
                [db_kind, *args.patch, *([f"{args.workers}-workers"] * (args.workers > 1))]
            ),
            "database": db_kind,
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "generator": args.generator,
            "workers": args.workers,
            "profiled": bool(args.profile),
            "patches": args.patch,
            "flywheel": fw,
            "baseline": results["baseline"],
            "ratio_rps": fw["rps"] / results["baseline"]["rps"],
            "durability": {
                "ok_answers": fw["ok_answers"],
                "rows": rows,
                "ok": stubbed or rows == fw["ok_answers"],
                "applies": not stubbed,
                "stop": "SIGKILL",
            },
            "target": {
                "rps": TARGET_RPS,
                "p99_ms": TARGET_P99_MS,
                "met": fw["rps"] >= TARGET_RPS and fw["p99_ms"] < TARGET_P99_MS,
            },
            "machine": machine(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(f"durability: {rows} rows for {fw['ok_answers']} 2xx answers")
        if args.profile:
            for name in ("event-loop", "writer"):
                if (work / f"{name}.prof").exists():
                    print_profile(work / f"{name}.prof", name, args.profile_top)
        return run


def main() -> None:
    ap = parser(__doc__, paragraph=True)
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--db", default="sqlite", help=f"'sqlite' or a PostgreSQL URL ({PG_URL})")
    ap.add_argument("--generator", choices=["raw", "httpx"], default="raw")
    ap.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (both servers)"
    )
    ap.add_argument("--predictions", type=int, default=200, help="feedback targets")
    ap.add_argument("--label", help="name of this run in the results (default: the database)")
    add_out(ap, RESULTS / "feedback.json", "runs, merged by label")
    ap.add_argument("--no-save", action="store_true", help="do not write --out")
    ap.add_argument("--report", action="store_true", help="only print the table of --out")
    ap.add_argument(
        "--patch",
        type=lambda v: [p for p in v.split(",") if p],
        default=[],
        help=f"prototype fixes on the Flywheel server, comma-separated: {', '.join(PATCHES)}",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the Flywheel server's event loop and writer during the window",
    )
    ap.add_argument("--profile-top", type=int, default=35)
    ap.add_argument(
        "--quiet",
        type=float,
        default=30.0,
        help="wait before each phase until the box's CPU use is below this (%% of a core); 0: "
        "do not wait",
    )
    ap.add_argument("--quiet-wait", type=float, default=180.0, help="longest wait, seconds")
    ap.add_argument("--tmp", help="folder for the temporary data dir (default: the system's)")
    args = ap.parse_args()

    if unknown := set(args.patch) - set(PATCHES):
        ap.error(f"unknown --patch {', '.join(sorted(unknown))}")
    if args.report:
        print(markdown(read_json(args.out)))
        return
    run = bench(args)
    if not args.no_save and not args.profile:
        merge_run(args.out, run)
    print()
    print(markdown([run]))
    if not run["durability"]["ok"]:
        sys.exit("durability check failed: rows != 2xx answers")


if __name__ == "__main__":
    main()
