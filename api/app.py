"""The FastAPI application: ``create_app(settings)`` wires the library to HTTP.

Everything stateful (database, stores, registry, champion cache, feedback writer) is
opened in the lifespan and hung on ``app.state.ctx``; routes reach it through
``api.auth.get_context``, which tests can override.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import web
from api.context import ApiContext, TTLCache
from api.cycle_runner import BrokerCycleRunner, CycleRunner
from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from api.metrics import Metrics, RequestMetrics
from api.routes import routers
from flywheel import __version__
from flywheel.config import Settings
from flywheel.feedback.writer import FeedbackWriter
from flywheel.learn.registry import ModelRegistry
from flywheel.serve.serving import ChampionCache
from flywheel.store.remote_reads import RemoteReader
from flywheel.store.remote_sources import RemoteSourcePolicy
from flywheel.workspace import open_workspace

DESCRIPTION = """
Flywheel's HTTP API. Product apps (`app` keys) predict, send feedback and upload samples;
ML engineers (`engineer` keys) also run cycles, review labels, read datasets and move
models. Send the key as `Authorization: Bearer <key>`.
"""


def open_context(settings: Settings, metrics: Metrics) -> ApiContext:
    ws = open_workspace(settings)
    registry = ModelRegistry.from_settings(settings)
    api = settings.api
    ctx = ApiContext(
        settings=settings,
        ws=ws,
        registry=registry,
        champion=ChampionCache(registry, api.champion_refresh_seconds),
        writer=None,  # type: ignore[arg-type]  # set just below: it needs ctx.labels
        auth_cache=TTLCache(api.auth_cache_seconds),
        labels_cache=TTLCache(api.auth_cache_seconds, refresh_in_background=True),
        metrics=metrics,
        remote_policy=RemoteSourcePolicy(settings.ingest.uri_roots, settings.ingest.uri_schemes),
        remote_reader=RemoteReader(settings.ingest),
    )
    ctx.writer = FeedbackWriter(ws.db, ctx.labels, api.max_batch_items)
    if settings.broker.url is not None:
        # Imported here, at the edge: the workers' publisher and relay (Celery).
        from workers.app import create_celery
        from workers.tasks import relay_and_trigger

        create_celery(settings)
        ctx.cycles = BrokerCycleRunner(ws, registry, relay_and_trigger)
    elif api.run_cycles_in_process:
        ctx.cycles = CycleRunner(ws, registry, ctx.champion.invalidate)
    return ctx


def tune_interpreter_for_serving(freeze_heap: bool) -> None:
    """Process-wide settings measured on the feedback benchmark (BENCHMARKS.md).

    - ``gc.freeze()`` once start-up is done (``api.freeze_heap``): torch, MLflow and pandas
      leave a large heap that every full collection re-scanned, stop-the-world pauses of
      ~400 ms that were the p99.
    - A 1 ms GIL switch interval (default 5 ms): the feedback writer thread gets the GIL
      back sooner while the event loop is busy, so group commits do not wait on it.
    """
    if freeze_heap:
        gc.collect()
        gc.freeze()
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))


def create_app(settings: Settings) -> FastAPI:
    holder: dict[str, ApiContext] = {}

    def champion_version() -> str | None:
        ctx = holder.get("ctx")
        return ctx.champion.loaded_version if ctx else None

    metrics = Metrics(champion_version)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = open_context(settings, metrics)
        holder["ctx"] = ctx
        app.state.ctx = ctx
        tune_interpreter_for_serving(settings.api.freeze_heap)
        try:
            yield
        finally:
            ctx.close()
            if settings.api.freeze_heap:
                gc.unfreeze()  # an app stopped inside a longer-lived process frees its heap

    app = FastAPI(
        title="Flywheel",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in routers():
        app.include_router(router)
    web.install(app)  # the engineers' web UI at /ui
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
