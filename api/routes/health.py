"""Liveness, readiness and Prometheus metrics (no key needed: probes and scrapers)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.auth import Context
from api.schemas import Check, Health, Readiness
from flywheel.cycle.outbox import pending

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


def _check(probe) -> Check:  # type: ignore[no-untyped-def]
    try:
        return Check(ok=True, detail=probe() or "ok")
    except Exception as exc:  # a probe's whole job is to report any failure
        return Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is not reachable"}},
)
def readyz(ctx: Context) -> JSONResponse:
    """Ready to serve: database, blob store, broker (when configured) and a champion model."""

    def database() -> str:
        with ctx.ws.db.session() as s:
            s.execute(text("SELECT 1"))
        return "ok"

    def blob_store() -> str:
        # A missing blob is a cheap round trip that proves the store answers.
        ctx.ws.blobs.exists(uuid.uuid4().hex * 2)
        return "ok"

    def broker() -> str:
        url = ctx.settings.broker.url
        if url is None:
            return "none configured: tasks run in-process"
        import redis

        redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0).ping()
        return "ok"

    def model() -> str:
        return f"champion version {ctx.champion.current().version}"

    checks = {
        "database": _check(database),
        "blob_store": _check(blob_store),
        "broker": _check(broker),
        "model": _check(model),
    }
    ready = all(c.ok for c in checks.values())
    body = Readiness(ready=ready, checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(ctx: Context) -> Response:
    """Prometheus text exposition."""
    ctx.metrics.outbox_pending.set(pending(ctx.ws.db))
    ctx.metrics.remote_reads_pending.set(ctx.remote_reader.pending)
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
