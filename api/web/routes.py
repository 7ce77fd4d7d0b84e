"""The web UI's page routes under ``/ui``: dashboard, charts, dataset diff, review queue,
label audit and thumbnails (logging in is ``api.web.login``). Each route reads its inputs,
calls its page's module in ``api.web.pages`` (which calls the library) and renders a
template; none of them decides anything itself.

Page routes are plain ``def``: FastAPI runs them in its thread pool, so a slow first
computation (an audit, a drift check) never blocks the event loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from api.auth import Context
from api.routes.datasets import REF_PATTERN
from api.routes.review import default_reviewer
from api.schemas import MAX_ID, SAFE_TEXT, Offset
from api.web import queries
from api.web.auth import CheckedSession, SessionDep
from api.web.pages import audit as audit_page
from api.web.pages import dashboard as dashboard_page
from api.web.pages.review import review_screen
from api.web.pages.version_diff import version_diff
from api.web.rendering import png, redirect, render
from api.web.state import web_state
from api.web.thumbnails import render_thumbnail
from flywheel.errors import ConflictError, FlywheelError, IntegrityError, NotFoundError
from flywheel.feedback.review import decide_review

router = APIRouter(prefix="/ui", include_in_schema=False)

SHA256 = "^[0-9a-f]{64}$"
THUMB_SIZES = (48, 64, 96, 128, 192, 256)
THUMB_MAX_AGE = 7 * 24 * 3600  # samples are content-addressed: their bytes never change
LabelFilter = Annotated[str | None, Query(max_length=200, pattern=SAFE_TEXT)]
VersionRef = Annotated[str, Query(pattern=REF_PATTERN, min_length=4, max_length=64)]


# --- dashboard ------------------------------------------------------------------------------
@router.get("", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request,
    ctx: Context,
    session: SessionDep,
    cycles_offset: Offset = 0,
    versions_offset: Offset = 0,
) -> HTMLResponse:
    board = dashboard_page.dashboard(ctx, web_state(ctx), cycles_offset, versions_offset)
    return render(
        request,
        "dashboard.html",
        session,
        nav="dashboard",
        board=board,
        latest_cycle=queries.latest_finished_cycle(ctx.ws.db),
    )


@router.get("/charts/cycles.png")
def cycles_chart(ctx: Context, session: SessionDep) -> Response:
    # The page links it with ?v=<cycles signature>: a new cycle is a new URL.
    return png(dashboard_page.cycles_chart(ctx, web_state(ctx)))


@router.get("/charts/embedding.png")
def embedding_chart(
    ctx: Context, session: SessionDep, color_by: dashboard_page.ColorBy = "label"
) -> Response:
    data = dashboard_page.embedding_map(ctx, web_state(ctx), color_by)
    if data is None:
        raise NotFoundError("no embedding map yet: it needs a cycle's embeddings")
    return png(data)


@router.post("/drift/check")
def drift_check(ctx: Context, session: CheckedSession) -> RedirectResponse:
    error = dashboard_page.drift_insight(ctx, web_state(ctx), force=True).error
    return redirect("/ui/", flash=f"Drift check: {error}" if error else "Drift checked.")


@router.post("/cycles")
def start_cycle(
    ctx: Context,
    session: CheckedSession,
    trigger: Annotated[Literal["manual", "drift"], Form()] = "manual",
) -> RedirectResponse:
    if ctx.cycles is None:
        return redirect("/ui/", flash="No cycle started: cycles are off in this server.")
    try:
        cycle_id = ctx.cycles.submit(ctx.settings.learning, trigger=trigger)
    except ConflictError as exc:
        return redirect("/ui/", flash=f"No cycle started: {exc}")
    return redirect("/ui/", flash=f"Cycle {cycle_id} started (trigger: {trigger}).")


@router.get("/datasets/diff", response_class=HTMLResponse)
def diff(
    request: Request, ctx: Context, session: SessionDep, a: VersionRef, b: VersionRef
) -> HTMLResponse:
    try:
        view = version_diff(ctx, web_state(ctx), a, b)
    except FlywheelError as exc:
        status = 404 if isinstance(exc, NotFoundError) else 422
        if isinstance(exc, IntegrityError):  # a manifest missing or failing its checksum
            status = 409
        return render(request, "error.html", session, status, nav="dashboard", message=str(exc))
    return render(request, "diff.html", session, nav="dashboard", diff=view)


# --- review ---------------------------------------------------------------------------------
@router.get("/review", response_class=HTMLResponse)
def review(
    request: Request,
    ctx: Context,
    session: SessionDep,
    label: LabelFilter = None,
    offset: Offset = 0,
) -> HTMLResponse:
    screen = review_screen(ctx, label or None, offset)
    return render(request, "review.html", session, nav="review", screen=screen)


class UiDecision(BaseModel):
    decision: Literal["accept", "reject", "correct"]
    label: str | None = Field(default=None, min_length=1, max_length=200, pattern=SAFE_TEXT)


class UiDecisionOut(BaseModel):
    """What the page's script reads back about the decided item."""

    id: int
    sample_id: str
    state: str
    decided_label: str | None
    reviewer: str | None


@router.post("/review/{item_id}")
def decide(
    body: UiDecision,
    ctx: Context,
    session: CheckedSession,
    item_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
) -> JSONResponse:
    """Accept (the proposed label), correct (to ``label``) or reject one item; a JSON answer
    for the page's script. Accepting and correcting write a ``human`` label."""
    if body.decision == "correct" and body.label is None:
        return JSONResponse(
            {"error": {"code": "invalid_input", "message": "correct needs a label"}}, 422
        )
    record = decide_review(
        ctx.ws.db,
        item_id,
        "reject" if body.decision == "reject" else "accept",
        default_reviewer(session.key),
        body.label if body.decision != "reject" else None,
        ctx.labels(),
    )
    return JSONResponse(UiDecisionOut.model_validate(record, from_attributes=True).model_dump())


# --- audit ----------------------------------------------------------------------------------
@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, ctx: Context, session: SessionDep, offset: Offset = 0) -> HTMLResponse:
    screen = audit_page.audit_screen(ctx, web_state(ctx), offset)
    return render(request, "audit.html", session, nav="audit", screen=screen)


@router.post("/audit/queue")
def queue_audit(ctx: Context, session: CheckedSession) -> RedirectResponse:
    try:
        opened = audit_page.queue_audit(ctx, web_state(ctx))
    except NotFoundError as exc:
        return redirect("/ui/audit", flash=str(exc))
    return redirect("/ui/review", flash=f"Audit issues queued for review: {opened} new items.")


# --- thumbnails -----------------------------------------------------------------------------
@router.get("/thumb/{sample_id}")
async def thumbnail(
    request: Request,
    ctx: Context,
    session: SessionDep,
    sample_id: Annotated[str, PathParam(pattern=SHA256)],
    size: Annotated[int, Query(ge=16, le=512)] = 96,
) -> Response:
    """A sample as a PNG thumbnail, for this UI's pages (session required)."""
    size = min(THUMB_SIZES, key=lambda s: abs(s - size))  # a few sizes: a small cache
    etag = f'"{sample_id}"'  # the URL carries the size; the bytes never change
    headers = {"Cache-Control": f"private, max-age={THUMB_MAX_AGE}", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    web = web_state(ctx)
    thumb = web.thumbnails.get((sample_id, size))
    if thumb is None:
        made = await run_in_threadpool(render_thumbnail, ctx, sample_id, size)
        if made is None:
            raise NotFoundError(f"no sample {sample_id}")
        thumb, cacheable = made
        if not cacheable:
            return Response(thumb, media_type="image/png", headers={"Cache-Control": "no-store"})
        web.thumbnails.put((sample_id, size), thumb)
    return Response(thumb, media_type="image/png", headers=headers)
