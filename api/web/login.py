"""Logging in and out of the UI: an engineer key, typed once, is exchanged for a signed
session cookie (``api.web.session``). The login form carries a double-submit token of its
own, so another site cannot log a browser in with a key of its choosing (login CSRF).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import Context
from api.web.auth import LOGIN_PATH, CheckedSession, safe_next
from api.web.rendering import redirect, render
from api.web.session import COOKIE, LOGIN_COOKIE
from api.web.state import web_state
from flywheel.serve.api_keys import AuthenticationError

router = APIRouter(prefix="/ui", include_in_schema=False)

# Why the login page is shown (``?reason=``): fixed texts, nothing echoed from the URL.
REASONS = {
    "login": "Log in with an engineer key.",
    "expired": "Your session expired: log in again.",
    "revoked": "Your key was revoked or removed: log in with another engineer key.",
    "engineer": "An engineer key is required.",
    "bad_key": "Unknown, malformed or revoked key.",
    "stale_form": "The login form expired: try again.",
}


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
