"""The web UI's routes under ``/ui``: login, dashboard, review queue, label audit, diff,
thumbnails and charts. Each route reads its inputs, calls ``api.web.views`` (which calls
the library) and renders a template; none of them decides anything itself.

Page routes are plain ``def``: FastAPI runs them in its thread pool, so a slow first
computation (an audit, a drift check) never blocks the event loop.
"""

from __future__ import annotations

import base64
import importlib.util
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from api.auth import Context
from api.routes.review import default_reviewer
from api.schemas import SAFE_TEXT
from api.web import views
from api.web.auth import LOGIN_PATH, CheckedSession, SessionDep, safe_next
from api.web.session import COOKIE, LOGIN_COOKIE, Session
from api.web.state import web_state
from flywheel.db import Sample
from flywheel.errors import ConflictError, FlywheelError, IntegrityError, NotFoundError
from flywheel.feedback.review import decide_review
from flywheel.serve.api_keys import AuthenticationError

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

SHA256 = "^[0-9a-f]{64}$"
REF = "^(latest|[0-9a-f]{4,64})$"  # as /v1/datasets: "latest", an id or a unique prefix
THUMB_SIZES = (48, 64, 96, 128, 192, 256)
THUMB_MAX_AGE = 7 * 24 * 3600  # samples are content-addressed: their bytes never change
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
LabelFilter = Annotated[str | None, Query(max_length=200, pattern=SAFE_TEXT)]

# Why the login page is shown (``?reason=``): fixed texts, nothing echoed from the URL.
REASONS = {
    "login": "Log in with an engineer key.",
    "expired": "Your session expired: log in again.",
    "revoked": "Your key was revoked or removed: log in with another engineer key.",
    "engineer": "An engineer key is required.",
    "bad_key": "Unknown, malformed or revoked key.",
    "stale_form": "The login form expired: try again.",
}
FLASH_COOKIE = "flywheel_flash"  # one message for the page after a redirect
# Pages may load only this site's scripts, styles and images, and nobody may frame them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


# --- template helpers --------------------------------------------------------------------
NONE = "\u2013"  # an en dash: the tables' "no value"


def pct(value: Any, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %" if isinstance(value, int | float) else NONE


def num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else NONE


def when(value: Any) -> str:
    """A datetime, or a time.time() stamp (cached results), as UTC minutes."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else NONE


templates.env.filters.update(pct=pct, num=num, when=when, short=lambda s: (s or "")[:12])


def render(
    request: Request,
    name: str,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    flash = _read_flash(request.cookies.get(FLASH_COOKIE))
    page = {"session": session, "flash": flash, **context}
    response = templates.TemplateResponse(request, name, page, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"  # pages hold data: not for shared caches
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/ui")
    return response


def _read_flash(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.urlsafe_b64decode(value.encode()).decode()[:500]
    except ValueError:
        return None


def redirect(path: str, flash: str | None = None, **params: Any) -> RedirectResponse:
    """A 303 to ``path`` (the browser GETs it); ``flash`` is shown once on that page. It
    travels in a short-lived cookie, not the URL, so no link can put words on our pages."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    response = RedirectResponse(f"{path}?{query}" if query else path, status_code=303)
    if flash:
        encoded = base64.urlsafe_b64encode(flash[:500].encode()).decode()
        response.set_cookie(
            FLASH_COOKIE, encoded, max_age=60, path="/ui", httponly=True, samesite="strict"
        )
    return response


# --- login ----------------------------------------------------------------------------------
def _set_session(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",  # a plain-http dev server would never send it
    )


def _login_page(
    request: Request, next_: str, error: str | None, status_code: int, hint: str | None = None
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    page = {"login_token": token, "next": next_, "error": error, "hint": hint}
    response = render(request, "login.html", None, status_code, **page)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/ui/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("", response_class=RedirectResponse)
def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> HTMLResponse:
    message = REASONS.get(reason or "")
    if reason == "login":  # simply not logged in yet: a hint, not an error
        return _login_page(request, safe_next(next), None, 200, hint=message)
    return _login_page(request, safe_next(next), message, 200)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    ctx: Context,
    key: Annotated[str, Form(max_length=500)] = "",
    login_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/ui/",
) -> Response:
    target = safe_next(next)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected.encode(), login_token.encode()):
        return redirect(LOGIN_PATH, reason="stale_form", next=target)
    try:
        info = ctx.authenticate(key.strip()) if key.strip() else None
    except AuthenticationError:
        info = None
    if info is None:
        return redirect(LOGIN_PATH, reason="bad_key", next=target)
    if not info.is_engineer:
        return _login_page(request, target, "Engineer key required: this is an app key.", 403)
    web = web_state(ctx)
    response = RedirectResponse(target, status_code=303)
    _set_session(response, request, web.signer.issue(info.id), int(web.signer.lifetime_s))
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return response


@router.post("/logout")
def logout(session: CheckedSession) -> RedirectResponse:
    response = redirect(LOGIN_PATH, flash="Logged out.")
    response.delete_cookie(COOKIE, path="/ui")
    return response


# --- dashboard ------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request,
    ctx: Context,
    session: SessionDep,
    cycles_offset: Offset = 0,
    versions_offset: Offset = 0,
) -> HTMLResponse:
    web = web_state(ctx)
    board = views.dashboard(ctx, web, cycles_offset, versions_offset)
    return render(
        request,
        "dashboard.html",
        session,
        nav="dashboard",
        board=board,
        latest_cycle=views.queries.latest_finished_cycle(ctx.ws.db),
        embedding_map=importlib.util.find_spec("flywheel.insights.embedding_map") is not None,
    )


def _png(data: bytes, max_age: int = 3600) -> Response:
    return Response(
        data, media_type="image/png", headers={"Cache-Control": f"private, max-age={max_age}"}
    )


@router.get("/charts/cycles.png")
def cycles_chart(ctx: Context, session: SessionDep) -> Response:
    # The page links it with ?v=<cycles signature>: a new cycle is a new URL.
    return _png(views.cycles_chart(ctx, web_state(ctx)))


@router.get("/charts/embedding.png")
def embedding_chart(
    ctx: Context, session: SessionDep, color_by: Literal["label", "source"] = "label"
) -> Response:
    web = web_state(ctx)
    try:
        data = views.embedding_map(ctx, web, color_by)
    except views.Unavailable:
        data = None
    if data is None:
        raise NotFoundError("no embedding map yet: it needs a cycle's embeddings")
    return _png(data)


@router.post("/drift/check")
def drift_check(ctx: Context, session: CheckedSession) -> RedirectResponse:
    result = views.drift_insight(ctx, web_state(ctx), force=True)
    problem = result.error or result.unavailable
    return redirect("/ui/", flash=f"Drift check: {problem}" if problem else "Drift checked.")


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
    request: Request,
    ctx: Context,
    session: SessionDep,
    a: Annotated[str, Query(pattern=REF, min_length=4, max_length=64)],
    b: Annotated[str, Query(pattern=REF, min_length=4, max_length=64)],
) -> HTMLResponse:
    try:
        view = views.version_diff(ctx, web_state(ctx), a, b)
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
    screen = views.review_screen(ctx, label or None, offset)
    return render(request, "review.html", session, nav="review", screen=screen)


class UiDecision(BaseModel):
    decision: Literal["accept", "reject", "correct"]
    label: str | None = Field(default=None, min_length=1, max_length=200, pattern=SAFE_TEXT)


@router.post("/review/{item_id}")
def decide(
    body: UiDecision,
    ctx: Context,
    session: CheckedSession,
    item_id: Annotated[int, PathParam(ge=1, le=2**31 - 1)],
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
    return JSONResponse(
        {
            "id": record.id,
            "sample_id": record.sample_id,
            "state": record.state,
            "decided_label": record.decided_label,
            "reviewer": record.reviewer,
        }
    )


# --- audit ----------------------------------------------------------------------------------
@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, ctx: Context, session: SessionDep, offset: Offset = 0) -> HTMLResponse:
    screen = views.audit_screen(ctx, web_state(ctx), offset)
    return render(request, "audit.html", session, nav="audit", screen=screen)


@router.post("/audit/queue")
def queue_audit(ctx: Context, session: CheckedSession) -> RedirectResponse:
    try:
        opened = views.queue_audit(ctx, web_state(ctx))
    except (views.Unavailable, NotFoundError) as exc:
        return redirect("/ui/audit", flash=str(exc))
    return redirect("/ui/review", flash=f"Audit issues queued for review: {opened} new items.")


# --- thumbnails -----------------------------------------------------------------------------
def _render_thumbnail(ctx: Context, sample_id: str, size: int) -> tuple[bytes, bool] | None:
    """(png, cacheable); None for an unknown sample."""
    try:
        data = ctx.ws.blobs.get(sample_id)
    except (NotFoundError, IntegrityError, OSError):
        with ctx.ws.db.session() as s:
            if s.get(Sample, sample_id) is None:
                return None
        return views.placeholder_png(size), False  # a known sample whose bytes are gone
    try:
        return views.thumbnail_png(data, size), True
    except Exception:  # undecodable stored bytes: say so in the picture, not with a 500
        return views.placeholder_png(size, "!"), False


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
    png = web.thumbnails.get((sample_id, size))
    if png is None:
        made = await run_in_threadpool(_render_thumbnail, ctx, sample_id, size)
        if made is None:
            raise NotFoundError(f"no sample {sample_id}")
        png, cacheable = made
        if not cacheable:
            return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
        web.thumbnails.put((sample_id, size), png)
    return Response(png, media_type="image/png", headers=headers)
