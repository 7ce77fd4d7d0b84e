"""Who may see the UI: a valid session cookie of a live engineer key, and for every POST
the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``)."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.auth import Context
from api.web.session import COOKIE, Session
from api.web.state import web_state

LOGIN_PATH = "/ui/login"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """No usable session: the browser is sent to the login page with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRejected(Exception):
    """A POST without this session's CSRF token."""


def safe_next(target: str | None) -> str:
    """Only a path inside the UI: a login link must not redirect anywhere else."""
    if target and target.startswith(("/ui/", "/ui?")) and "\\" not in target:
        return target
    return "/ui/"


async def current_session(request: Request, ctx: Context) -> Session:
    web = web_state(ctx)
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        raise LoginRequired("login")
    verified = web.signer.verify(cookie)
    if verified is None:
        raise LoginRequired("expired")
    key_id, expires_at, csrf = verified
    found, key = web.cached_key(key_id)
    if not found:
        key = await run_in_threadpool(web.key, key_id)  # a miss reads the database
    if key is None or key.revoked_at is not None:
        raise LoginRequired("revoked")
    if not key.is_engineer:  # cannot happen through the login form; a role change can
        raise LoginRequired("engineer")
    return Session(key, csrf, expires_at)


SessionDep = Annotated[Session, Depends(current_session)]


async def checked_session(request: Request, session: SessionDep) -> Session:
    """The session, for a POST that carries its CSRF token."""
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        token = (await request.form()).get("csrf")  # parsed once: the route reads it again
    # Bytes: compare_digest refuses non-ASCII str, and a forged token may be anything.
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfRejected()
    return session


CheckedSession = Annotated[Session, Depends(checked_session)]


def _wants_json(request: Request) -> bool:
    """A script's request (JSON body, JSON answer or our CSRF header), not a page load."""
    headers = request.headers
    return (
        CSRF_HEADER in headers
        or "application/json" in headers.get("accept", "")
        or headers.get("content-type", "").startswith("application/json")
    )


async def on_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    if _wants_json(request):  # the page's own fetches: the script sends the user to log in
        response: Response = JSONResponse(
            {"error": {"code": "login_required", "message": "log in again", "login": LOGIN_PATH}},
            status_code=401,
        )
    else:
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{LOGIN_PATH}?reason={exc.reason}"
        if request.method == "GET" and request.url.path != "/ui/":
            target += f"&next={quote(here, safe='')}"
        response = RedirectResponse(target, status_code=303)
    if exc.reason != "login":  # a cookie that no longer works is removed
        response.delete_cookie(COOKIE, path="/ui")
    return response


CSRF_MESSAGE = "this form is stale or not from this site: reload the page and try again"


async def on_csrf_rejected(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": {"code": "csrf", "message": CSRF_MESSAGE}}, status_code=403)
    page = f'<!doctype html><title>Refused</title><p>{CSRF_MESSAGE}.</p><a href="/ui/">Back</a>'
    return HTMLResponse(page, status_code=403)
