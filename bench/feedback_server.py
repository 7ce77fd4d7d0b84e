"""The two servers bench_feedback.py measures, each run alone in a subprocess: the real app
with its group commit, database COMMITs and garbage-collector pauses timed (statistics at
``/_bench/stats``), and a bare FastAPI endpoint that parses the same body and writes
nothing. ``--patch`` diagnostics (PATCHES) isolate a layer's cost on the real app."""

# No `from __future__ import annotations`: FastAPI must resolve the baseline's locally
# imported body type from its annotations.

import os
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.resources import thread_cpu

if TYPE_CHECKING:
    from fastapi import FastAPI


def baseline_app() -> "FastAPI":
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
# Diagnostics (``--patch``), applied by monkeypatching the Flywheel server only. The fixes
# they once prototyped are in the product now; they isolate a layer's cost.


def patch_no_metrics(app: "FastAPI") -> None:
    """Drop the per-request Prometheus middleware (to measure its cost only)."""
    from api.metrics import RequestMetrics

    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]


def patch_stub_writer() -> None:
    """Answer feedback without the database (measurement only: isolates the HTTP layer's
    cost; nothing is written, so the durability check does not apply)."""
    from concurrent.futures import Future

    from flywheel.db.models import utcnow
    from flywheel.feedback import writer as fb

    def submit(self: fb.FeedbackWriter, requests: list[Any]) -> list[Future]:
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


PATCHES = {
    "no-metrics": patch_no_metrics,
    "stub-writer": patch_stub_writer,
}
APP_FREE_PATCHES = ("stub-writer",)  # applied before the app is built


class Instruments:
    """Timers around the writer's group commit, the database's own COMMIT (fsync; SQLite
    also checkpoints its WAL in it) and garbage-collector pauses, which stop every thread
    (the app imports torch, MLflow and pandas: a full collection walks millions of
    objects). Stalls are kept as (what, when (epoch s), seconds), to match against slow
    answers; with BENCH_PROFILE the writer thread is profiled while ``profiling`` is set."""

    def __init__(self) -> None:
        import cProfile
        import threading

        self.stats: dict[str, Any] = {
            "commits": 0, "items": 0, "commit_s": 0.0, "max_batch": 0, "max_commit_s": 0.0
        }  # fmt: skip
        self.slow: list[tuple[str, float, float]] = []
        self.profiling = threading.Event()
        self.writer_profile = cProfile.Profile()
        self.writer_profiling = False
        self.gc_started = 0.0

    def install(self) -> None:
        import gc

        from sqlalchemy.engine.default import DefaultDialect

        from flywheel.feedback.writer import FeedbackWriter

        commit, do_commit = FeedbackWriter._commit, DefaultDialect.do_commit

        def timed_commit(writer: Any, work: list) -> None:
            self.timed_commit(commit, writer, work)

        def timed_db_commit(dialect: Any, dbapi_connection: Any) -> None:
            self.timed_db_commit(do_commit, dialect, dbapi_connection)

        FeedbackWriter._commit = timed_commit  # type: ignore[method-assign]
        DefaultDialect.do_commit = timed_db_commit  # type: ignore[method-assign]
        gc.callbacks.append(self.on_gc)

    def timed_commit(self, commit: Any, writer: Any, work: list) -> None:
        if self.profiling.is_set() != self.writer_profiling:  # cProfile binds to the thread
            self.writer_profiling = self.profiling.is_set()
            if self.writer_profiling:
                self.writer_profile.enable()
            else:
                self.writer_profile.disable()
                self.writer_profile.dump_stats(f"{os.environ['BENCH_PROFILE']}/writer.prof")
        t0 = time.perf_counter()
        commit(writer, work)
        dt = time.perf_counter() - t0
        st = self.stats
        st["commit_s"] += dt
        st["max_commit_s"] = max(st["max_commit_s"], dt)
        if dt > 0.05:
            self.slow.append(("group commit", time.time() - dt, dt))
        st["commits"] += 1
        st["items"] += len(work)
        st["max_batch"] = max(st["max_batch"], len(work))

    def timed_db_commit(self, do_commit: Any, dialect: Any, dbapi_connection: Any) -> None:
        t0 = time.perf_counter()
        do_commit(dialect, dbapi_connection)
        dt = time.perf_counter() - t0
        self.stats["db_commit_s"] = self.stats.get("db_commit_s", 0.0) + dt
        self.stats["db_commits"] = self.stats.get("db_commits", 0) + 1
        if dt > 0.02:
            self.slow.append(("database COMMIT", time.time() - dt, dt))

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_started = time.perf_counter()
            return
        gen, st = info["generation"], self.stats
        dt = time.perf_counter() - self.gc_started
        st[f"gc{gen}_n"] = st.get(f"gc{gen}_n", 0) + 1
        st[f"gc{gen}_s"] = st.get(f"gc{gen}_s", 0.0) + dt
        st[f"gc{gen}_max_s"] = max(st.get(f"gc{gen}_max_s", 0.0), dt)
        if dt > 0.02:
            self.slow.append((f"gc gen{gen}", time.time() - dt, dt))


def flywheel_app() -> "FastAPI":
    """The real app (settings from FLYWHEEL_* env), instrumented, patched by BENCH_PATCH."""
    import cProfile

    from api.app import create_app
    from flywheel.config import load_settings

    instruments = Instruments()
    instruments.install()
    patches = [p for p in os.environ.get("BENCH_PATCH", "").split(",") if p]
    for name in patches:
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
        out = {**instruments.stats, "threads": thread_cpu(), "slow": instruments.slow[-200:]}
        calls[0] += 1
        if profile_dir and calls[0] == 1:
            instruments.profiling.set()
            loop_profile.enable()
        elif profile_dir and calls[0] == 2:
            loop_profile.disable()
            instruments.profiling.clear()
            loop_profile.dump_stats(f"{profile_dir}/event-loop.prof")
        return out

    return app


def serve(kind: str, port: int, workers: int) -> None:
    """Run server ``kind`` (flywheel or baseline) on ``port`` under uvicorn (uvloop,
    httptools, no access log) until killed."""
    import uvicorn

    settings: dict[str, Any] = dict(
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    if workers > 1:  # worker processes import the app factory by name (spawned: same path)
        factory = "flywheel_app" if kind == "flywheel" else "baseline_app"
        uvicorn.run(f"{Path(__file__).stem}:{factory}", factory=True, workers=workers, **settings)
    else:
        uvicorn.run(flywheel_app() if kind == "flywheel" else baseline_app(), **settings)


if __name__ == "__main__":
    # bench_feedback.py runs this file alone (``KIND PORT WORKERS``): the server process
    # imports the app and nothing of the load generator's, as a deployment would.
    kind, port, workers = sys.argv[1:4]
    if kind not in ("flywheel", "baseline"):
        sys.exit(f"unknown server {kind!r}: flywheel or baseline")
    serve(kind, int(port), int(workers))
