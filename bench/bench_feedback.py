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
window and prints where the time goes; ``--patch`` isolates a layer's cost (see PATCHES).
"""

# No `from __future__ import annotations`: FastAPI must resolve the baseline's locally
# imported body type from its annotations.

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "feedback.json"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_RPS, TARGET_P99_MS = 1000, 50.0
TENANT = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------
# Servers (run as ``--serve flywheel|baseline`` in a subprocess)


def baseline_app():  # type: ignore[no-untyped-def]
    """The least any feedback endpoint does: route, parse and validate the body, answer."""
    from typing import Annotated

    from fastapi import FastAPI, Header

    from api.schemas import FeedbackIn

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/feedback", status_code=201)
    async def feedback(
        body: FeedbackIn,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict[str, Any]:
        return {
            "feedback_id": idempotency_key,
            "prediction_id": body.prediction_id,
            "kind": body.kind.value,
            "label": body.label,
            "user_id": body.user_id,
            "replayed": False,
        }

    return app


# ---------------------------------------------------------------------------------------
# Prototypes of fixes (``--patch``): applied by monkeypatching the Flywheel server only, to
# measure what a change to the app would buy before making it.


def patch_no_metrics(app) -> None:  # type: ignore[no-untyped-def]
    """Drop the per-request Prometheus middleware (to measure its cost only)."""
    from api.metrics import RequestMetrics

    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]


def patch_stub_writer() -> None:
    """Answer feedback without the database (measurement only: isolates the HTTP layer's
    cost; nothing is written, so the durability check does not apply)."""
    from concurrent.futures import Future

    from flywheel.db.models import utcnow
    from flywheel.feedback import writer as fb

    def submit(self, requests):  # type: ignore[no-untyped-def]
        futures = []
        for req in requests:
            fut: Future = Future()
            record = fb.FeedbackRecord(
                str(uuid.uuid4()), req.prediction_id, req.kind.value, req.label, req.user_id,
                req.tenant, utcnow(),
            )  # fmt: skip
            fut.set_result(fb.FeedbackOutcome(record))
            futures.append(fut)
        return futures

    fb.FeedbackWriter.submit = submit  # type: ignore[method-assign]


# Diagnostics only (the fixes they once prototyped are in the product now): drop the
# metrics middleware, or answer feedback without the database, to isolate a layer's cost.
PATCHES = {
    "no-metrics": patch_no_metrics,
    "stub-writer": patch_stub_writer,
}


APP_FREE_PATCHES = ("stub-writer",)


def flywheel_app():  # type: ignore[no-untyped-def]
    """The real app (settings from FLYWHEEL_* env), with the group commit timed."""
    import cProfile
    import threading

    from api.app import create_app
    from flywheel.config import load_settings
    from flywheel.feedback.writer import FeedbackWriter

    stats: dict[str, float] = {
        "commits": 0, "items": 0, "commit_s": 0.0, "max_batch": 0, "max_commit_s": 0.0
    }  # fmt: skip
    commit = FeedbackWriter._commit

    # Stalls (what, when (epoch s), seconds), to match against slow answers.
    slow: list[tuple[str, float, float]] = []
    profiling = threading.Event()
    writer_profile = cProfile.Profile()
    writer_profiling = [False]

    def timed_commit(self, work):  # type: ignore[no-untyped-def]
        if profiling.is_set() != writer_profiling[0]:  # cProfile binds to the calling thread
            writer_profiling[0] = profiling.is_set()
            if writer_profiling[0]:
                writer_profile.enable()
            else:
                writer_profile.disable()
                writer_profile.dump_stats(f"{os.environ['BENCH_PROFILE']}/writer.prof")
        t0 = time.perf_counter()
        commit(self, work)
        dt = time.perf_counter() - t0
        stats["commit_s"] += dt
        stats["max_commit_s"] = max(stats["max_commit_s"], dt)
        if dt > 0.05:
            slow.append(("group commit", time.time() - dt, dt))
        stats["commits"] += 1
        stats["items"] += len(work)
        stats["max_batch"] = max(stats["max_batch"], len(work))

    FeedbackWriter._commit = timed_commit  # type: ignore[method-assign]

    # The database's own COMMIT (fsync; SQLite also checkpoints its WAL in it).
    from sqlalchemy.engine.default import DefaultDialect

    do_commit = DefaultDialect.do_commit

    def timed_do_commit(self, dbapi_connection):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        do_commit(self, dbapi_connection)
        dt = time.perf_counter() - t0
        stats["db_commit_s"] = stats.get("db_commit_s", 0.0) + dt
        stats["db_commits"] = stats.get("db_commits", 0) + 1
        if dt > 0.02:
            slow.append(("database COMMIT", time.time() - dt, dt))

    DefaultDialect.do_commit = timed_do_commit  # type: ignore[method-assign]

    # Garbage-collector pauses stop every thread; the app imports torch, MLflow and pandas,
    # so a full collection walks millions of objects.
    import gc

    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
            return
        gen = info["generation"]
        dt = time.perf_counter() - gc_started[0]
        stats[f"gc{gen}_n"] = stats.get(f"gc{gen}_n", 0) + 1
        stats[f"gc{gen}_s"] = stats.get(f"gc{gen}_s", 0.0) + dt
        stats[f"gc{gen}_max_s"] = max(stats.get(f"gc{gen}_max_s", 0.0), dt)
        if dt > 0.02:
            slow.append((f"gc gen{gen}", time.time() - dt, dt))

    gc.callbacks.append(on_gc)
    patches = [p for p in os.environ.get("BENCH_PATCH", "").split(",") if p]
    for name in patches:  # those that do not need the app: before it is built
        if name in APP_FREE_PATCHES:
            PATCHES[name]()
    app = create_app(load_settings())
    for name in patches:
        if name not in APP_FREE_PATCHES:
            PATCHES[name](app)

    # --profile: the event loop (this thread) and the writer thread are profiled between
    # the two stats calls that bracket the measured window, not during start-up.
    profile_dir = os.environ.get("BENCH_PROFILE")
    loop_profile = cProfile.Profile()
    calls = [0]

    @app.get("/_bench/stats", include_in_schema=False)
    async def bench_stats() -> dict[str, Any]:
        out = {**stats, "threads": thread_cpu(), "slow": slow[-200:]}
        calls[0] += 1
        if profile_dir and calls[0] == 1:
            profiling.set()
            loop_profile.enable()
        elif profile_dir and calls[0] == 2:
            loop_profile.disable()
            profiling.clear()
            loop_profile.dump_stats(f"{profile_dir}/event-loop.prof")
        return out

    return app


def thread_cpu() -> dict[str, float]:
    """CPU seconds per kind of thread of this process (event loop, writer, thread pool)."""
    import threading

    out: dict[str, float] = {}
    for t in threading.enumerate():
        name = "event loop" if t is threading.main_thread() else t.name.split(" (")[0]
        name = "thread pool" if "AnyIO" in name else name
        with contextlib.suppress(OSError):  # the thread ended
            out[name] = out.get(name, 0.0) + proc_cpu(f"{os.getpid()}/task/{t.native_id}")
    return out


def serve(kind: str, port: int, workers: int) -> None:
    import uvicorn

    settings: dict[str, Any] = dict(
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    if workers > 1:  # worker processes import the app factory by name
        sys.path.insert(0, str(Path(__file__).parent))
        factory = "flywheel_app" if kind == "flywheel" else "baseline_app"
        uvicorn.run(f"bench_feedback:{factory}", factory=True, workers=workers, **settings)
    else:
        uvicorn.run(flywheel_app() if kind == "flywheel" else baseline_app(), **settings)


# ---------------------------------------------------------------------------------------
# Preparation


def prepare(data_dir: Path, db_url: str | None, n_predictions: int) -> tuple[str, list[str]]:
    """A workspace with 50 digits, a promoted champion and ``n_predictions`` predictions."""
    import torch
    from sqlalchemy import select

    from flywheel.config import Settings
    from flywheel.db import Sample
    from flywheel.learn.backbones import Classifier, build_backbone
    from flywheel.learn.registry import ModelRegistry
    from flywheel.serve.api_keys import create_key
    from flywheel.serve.serving import ChampionCache, predict_sample
    from flywheel.store.ingest import SplitPlan, digits_candidates, ingest_candidates
    from flywheel.workspace import open_workspace

    settings = Settings(data_dir=data_dir, database={"url": db_url})
    ws = open_workspace(settings)
    try:
        ingest_candidates(
            ws.db,
            ws.blobs,
            digits_candidates()[:50],
            "digits",
            settings.ingest,
            SplitPlan(labels_per_class=3, test_fraction=0.2, seed=0),
        )
        registry = ModelRegistry.from_settings(settings)
        torch.manual_seed(0)
        model = Classifier(build_backbone("small_cnn", 1, None, width=4), 10)
        with registry.run("bench", {"seed": 0}):
            registry.log_model(model, {"classes": ",".join(map(str, range(10))), "cycle_id": "0"})
        registry.promote("1", "bench")
        serving = ChampionCache(registry, 0).current()
        _, token = create_key(ws.db, "app", TENANT, "bench app")
        with ws.db.session() as s:
            sample_ids = list(s.scalars(select(Sample.id)))
        predictions = [
            predict_sample(
                ws.db, ws.blobs, serving, sample_ids[i % len(sample_ids)], settings.learning, 5,
                TENANT,
            ).id
            for i in range(n_predictions)
        ]  # fmt: skip
    finally:
        ws.close()
    return token, predictions


def count_feedback(db_url: str) -> int:
    from sqlalchemy import func, select

    from flywheel.db import Feedback, open_database

    db = open_database(db_url, auto_migrate=False)
    try:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(Feedback)) or 0)
    finally:
        db.dispose()


# ---------------------------------------------------------------------------------------
# Load


def bodies(prediction_ids: list[str]) -> list[bytes]:
    """A mix of the three kinds, as an app would send them."""
    out = []
    for i, pid in enumerate(prediction_ids):
        body: dict[str, Any] = {"prediction_id": pid, "user_id": f"user-{i % 97}"}
        match i % 3:
            case 0:
                body["kind"] = "confirm"
            case 1:
                body["kind"] = "reject"
            case _:
                body |= {"kind": "correct", "label": str(i % 10)}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.lower().find(b"content-length:")
    if at < 0:
        raise RuntimeError("the server sent no Content-Length")
    n = int(head[at + 15 : head.index(b"\r\n", at)])
    return status, (await reader.readexactly(n) if n else b"")


def proc_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) used by process ``pid`` and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (uvicorn's worker processes)."""
    total = proc_cpu(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                total += tree_cpu(int(child))
    return total


def box_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds over all cores since boot."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / TICKS, sum(v[:8]) / TICKS


def postgres_cpu() -> float:
    """CPU seconds used by the PostgreSQL server's processes (0 where there is none)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def wait_for_quiet(threshold: float, patience: float) -> float:
    """Wait (up to ``patience`` s) until the box's CPU use over 1 s is below ``threshold``
    (% of one core): other jobs on a 2-core box would otherwise be measured with us. The
    last reading."""
    deadline = time.monotonic() + patience
    while True:
        b0, _ = box_cpu()
        time.sleep(1.0)
        busy = 100 * (box_cpu()[0] - b0)
        if busy < threshold or time.monotonic() > deadline:
            return busy
        print(f"  box busy ({busy:.0f} % of a core): waiting for other jobs", flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Load:
    """``clients`` closed-loop clients against one server; statistics for the window."""

    def __init__(
        self, port: int, token: str, payloads: list[bytes], clients: int, stats_path: str | None
    ) -> None:
        self.port = port
        self.token = token
        self.payloads = payloads
        self.clients = clients
        self.stats_path = stats_path
        self.prefix = uuid.uuid4().hex[:12]
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.latencies: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (epoch start, seconds) of answers > 50 ms

    def request(self, c: int, i: int) -> bytes:
        body = self.payloads[(c * 7919 + i) % len(self.payloads)]
        return (
            f"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {self.prefix}-{c}-{i}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def raw_client(self, c: int, start: float, end: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        i = 0
        try:
            while (t0 := time.perf_counter()) < end:
                writer.write(self.request(c, i))
                i += 1
                try:
                    status, _ = await read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    self.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    continue
                t1 = time.perf_counter()
                self.statuses[status] += 1
                if t0 >= start:
                    self.latencies.append(t1 - t0)
                    if t1 - t0 > 0.05:
                        self.slow.append((time.time() - (t1 - t0), t1 - t0))
        finally:
            writer.close()

    async def httpx_clients(self, start: float, end: float) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers, limits=limits, timeout=30
        ) as hc:

            async def one(c: int) -> None:
                i = 0
                while (t0 := time.perf_counter()) < end:
                    body = self.payloads[(c * 7919 + i) % len(self.payloads)]
                    key = f"{self.prefix}-{c}-{i}"
                    i += 1
                    try:
                        r = await hc.post(
                            "/v1/feedback", content=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        self.errors += 1
                        continue
                    t1 = time.perf_counter()
                    self.statuses[r.status_code] += 1
                    if t0 >= start:
                        self.latencies.append(t1 - t0)

            await asyncio.gather(*(one(c) for c in range(self.clients)))

    async def writer_stats(self) -> dict[str, float] | None:
        if not self.stats_path:
            return None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"GET {self.stats_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        _, body = await read_response(reader)
        writer.close()
        return json.loads(body)

    async def run(
        self, server_pid: int, warmup: float, seconds: float, generator: str
    ) -> dict[str, Any]:
        t = time.perf_counter()
        start, end = t + warmup, t + warmup + seconds
        samples: dict[str, Any] = {}

        async def sample(at: float, name: str) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            samples[name] = (
                tree_cpu(server_pid),
                time.process_time(),
                box_cpu(),
                postgres_cpu(),
                await self.writer_stats(),
                time.perf_counter(),
                time.time(),
            )

        if generator == "raw":
            load = [self.raw_client(c, start, end) for c in range(self.clients)]
        else:
            load = [self.httpx_clients(start, end)]
        await asyncio.gather(*load, sample(start, "start"), sample(end, "end"))
        (s0, g0, (b0, bt0), p0, w0, t0, _) = samples["start"]
        (s1, g1, (b1, bt1), p1, w1, t1, _) = samples["end"]
        window = t1 - t0
        cpu = {
            "server": 100 * (s1 - s0) / window,
            "generator": 100 * (g1 - g0) / window,
            "postgres": 100 * (p1 - p0) / window,
            "box": 100 * (b1 - b0) / ((bt1 - bt0) / (os.cpu_count() or 1)),
        }
        lat = sorted(self.latencies)
        ms = 1000.0
        out: dict[str, Any] = {
            "requests": len(lat),
            "rps": len(lat) / seconds,
            "p50_ms": percentile(lat, 0.50) * ms,
            "p95_ms": percentile(lat, 0.95) * ms,
            "p99_ms": percentile(lat, 0.99) * ms,
            "max_ms": (lat[-1] if lat else float("nan")) * ms,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors,
            # CPU in % of one core over the window (the box has os.cpu_count() cores);
            # "other" is everything else on the box: kernel, and jobs that are not ours.
            "server_cpu_pct": cpu["server"],
            # Robust to other jobs on the box: the server's CPU per answered request.
            "server_cpu_ms_per_request": 1000 * (s1 - s0) / max(len(lat), 1),
            "generator_cpu_pct": cpu["generator"],
            "postgres_cpu_pct": cpu["postgres"],
            "box_cpu_pct": cpu["box"],
            "other_cpu_pct": cpu["box"] - cpu["server"] - cpu["generator"] - cpu["postgres"],
        }
        if w0 is not None and w1 is not None:
            commits = w1["commits"] - w0["commits"]
            items = w1["items"] - w0["items"]
            out["group_commit"] = {
                "commits_per_s": commits / window,
                "mean_batch": items / commits if commits else 0.0,
                "max_batch": w1["max_batch"],
                "max_commit_ms": 1000 * w1["max_commit_s"],
                "mean_commit_ms": 1000 * (w1["commit_s"] - w0["commit_s"]) / max(commits, 1),
                "writer_busy_pct": 100 * (w1["commit_s"] - w0["commit_s"]) / window,
                "mean_db_commit_ms": 1000
                * (w1.get("db_commit_s", 0.0) - w0.get("db_commit_s", 0.0))
                / max(w1.get("db_commits", 0) - w0.get("db_commits", 0), 1),
            }
            # Server stalls in the window, and the answers over 50 ms they explain.
            e0, e1 = samples["start"][-1], samples["end"][-1]
            stalls = [(what, at, d) for what, at, d in w1["slow"] if e0 <= at + d and at <= e1]
            slow = [(at, d) for at, d in self.slow if at >= e0]
            explained = sum(
                1 for at, d in slow if any(a <= at + d and at <= a + sd for _, a, sd in stalls)
            )
            out["stalls"] = {
                "events": [
                    {"what": what, "at_s": round(at - e0, 3), "ms": round(1000 * d, 1)}
                    for what, at, d in stalls
                ],
                "answers_over_50ms": len(slow),
                "of_which_during_a_stall": explained,
            }
            out["gc"] = {
                f"gen{g}": {
                    "count": w1.get(f"gc{g}_n", 0) - w0.get(f"gc{g}_n", 0),
                    "total_ms": 1000 * (w1.get(f"gc{g}_s", 0.0) - w0.get(f"gc{g}_s", 0.0)),
                    "max_ms_whole_run": 1000 * w1.get(f"gc{g}_max_s", 0.0),
                }
                for g in range(3)
            }
            # Server CPU by thread, in ms per answered request.
            out["server_cpu_ms_per_request_by_thread"] = {
                name: 1000 * (w1["threads"][name] - w0["threads"].get(name, 0.0)) / max(len(lat), 1)
                for name in w1["threads"]
            }
        return out


# ---------------------------------------------------------------------------------------
# Orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, env: dict[str, str], workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    # A session of its own: SIGKILL goes to the whole group (uvicorn's workers too).
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {kind} server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError(f"the {kind} server did not start")
    # One worker answering is not all of them started: wait until the processes go idle.
    while time.monotonic() < deadline:
        c0 = tree_cpu(proc.pid)
        time.sleep(0.5)
        if tree_cpu(proc.pid) - c0 < 0.05:
            return proc, port
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the {kind} server did not settle")


def run_phase(
    kind: str, env: dict[str, str], token: str, payloads: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    proc, port = start_server(kind, env, args.workers)
    if args.quiet > 0:
        wait_for_quiet(args.quiet, args.quiet_wait)
    try:
        # Per-process statistics: only meaningful with one worker.
        stats = "/_bench/stats" if kind == "flywheel" and args.workers == 1 else None
        load = Load(port, token, payloads, args.clients, stats)
        result = asyncio.Runner(loop_factory=_loop_factory()).run(
            load.run(proc.pid, args.warmup, args.seconds, args.generator)
        )
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
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    return result


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


def fresh_database(db: str, schema: str) -> tuple[str, Callable[[], None]]:
    """A URL to an empty PostgreSQL schema, and how to drop it."""
    from sqlalchemy import create_engine, text

    admin = create_engine(db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in db else "?"
    return f"{db}{sep}options=-csearch_path%3D{schema}", drop


def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-feedback-", dir=args.tmp))
    drop: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if args.db == "sqlite":
            db_url, db_kind = f"sqlite:///{work / 'data' / 'flywheel.db'}", "sqlite"
        else:
            db_url, drop = fresh_database(args.db, f"bench_{uuid.uuid4().hex[:10]}")
            db_kind = "postgresql"
        t0 = time.perf_counter()
        token, predictions = prepare(work / "data", db_url, args.predictions)
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
            results[kind] = run_phase(kind, env, token, payloads, args)
            r = results[kind]
            if "gc" in r:
                print(f"  gc: {r['gc']}")
            if "stalls" in r:
                st = r["stalls"]
                print(
                    f"  stalls: {st['answers_over_50ms']} answers > 50 ms, "
                    f"{st['of_which_during_a_stall']} during one of: {st['events'][:12]}"
                )
            for key in ("group_commit", "server_cpu_ms_per_request_by_thread"):
                if key in r:
                    print(f"  {key}: " + ", ".join(f"{k} {v:.3g}" for k, v in r[key].items()))
            print(
                f"  {r['rps']:,.0f} req/s  p50 {r['p50_ms']:.1f}  p95 {r['p95_ms']:.1f}  "
                f"p99 {r['p99_ms']:.1f} ms  CPU: server {r['server_cpu_pct']:.0f} %  "
                f"generator {r['generator_cpu_pct']:.0f} %  "
                f"postgres {r['postgres_cpu_pct']:.0f} %  other {r['other_cpu_pct']:.0f} %  "
                f"server CPU/request {r['server_cpu_ms_per_request']:.3f} ms  "
                f"statuses {r['statuses']}"
            )
        rows = count_feedback(db_url)
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
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        print(f"durability: {rows} rows for {fw['ok_answers']} 2xx answers")
        if args.profile:
            for name in ("event-loop", "writer"):
                if (work / f"{name}.prof").exists():
                    print_profile(work / f"{name}.prof", name, args.profile_top)
        return run
    finally:
        drop()
        shutil.rmtree(work, ignore_errors=True)


def print_profile(path: Path, name: str, top: int) -> None:
    """Own time by package (where the time goes), then the top functions."""
    import pstats

    stats = pstats.Stats(str(path))
    by_package: Counter[str] = Counter()
    total = 0.0
    for (file, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "site-packages/" in file:
            package = file.split("site-packages/")[1].split("/")[0]
        elif file.startswith(str(ROOT)):
            package = str(Path(file).relative_to(ROOT))
        elif file == "~":
            package = f"builtin {func}"
        else:
            package = "stdlib " + Path(file).stem
        by_package[package] += tottime
    print(f"\n## {name}: own time by package ({total:.2f} s profiled)")
    for package, t in by_package.most_common(top):
        print(f"{100 * t / total:6.1f} %  {package}")
    print(f"\n## {name}: top functions by own time")
    stats.sort_stats("tottime").print_stats(top)


def markdown(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| run | server | req/s | p50 ms | p95 ms | p99 ms | CPU % server / pg / other "
        "| server CPU ms/req | vs bare | rows / 2xx | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    # As-is first, then by how many fixes were applied.
    for run in sorted(runs, key=lambda r: (r["database"], len(r.get("patches", [])), r["label"])):
        d = run["durability"]
        for kind in ("flywheel", "baseline"):
            r = run[kind]
            cells = [
                f"{run['label']} ({run['clients']} clients, {run['seconds']:g} s"
                + (f", {run['workers']} workers)" if run.get("workers", 1) > 1 else ")"),
                "Flywheel" if kind == "flywheel" else "bare FastAPI",
                f"{r['rps']:,.0f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['server_cpu_pct']:.0f} / {r['postgres_cpu_pct']:.0f} / "
                f"{r['other_cpu_pct']:.0f}",
                f"{r['server_cpu_ms_per_request']:.3f}",
            ]
            if kind == "flywheel":
                cells += [
                    f"{run['ratio_rps']:.2f}",
                    f"{d['rows']:,} / {d['ok_answers']:,}",
                    "met" if run["target"]["met"] else "missed",
                ]
            else:
                cells += ["1", "-", "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(run: dict[str, Any], path: Path) -> None:
    runs = json.loads(path.read_text()) if path.exists() else []
    runs = [r for r in runs if r["label"] != run["label"]] + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    ap.add_argument("--out", type=Path, default=RESULTS)
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
    # Internal: the server subprocess.
    ap.add_argument("--serve", choices=["flywheel", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if unknown := set(args.patch) - set(PATCHES):
        ap.error(f"unknown --patch {', '.join(sorted(unknown))}")
    if args.serve:
        serve(args.serve, args.port, args.workers)
        return
    if args.report:
        print(markdown(json.loads(args.out.read_text())))
        return
    run = bench(args)
    if not args.no_save and not args.profile:
        save(run, args.out)
    print()
    print(markdown([run]))
    if not run["durability"]["ok"]:
        sys.exit("durability check failed: rows != 2xx answers")


if __name__ == "__main__":
    main()
