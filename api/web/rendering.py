"""How every page answers: a template rendered with the session and the flash message,
under a strict Content-Security-Policy and never cached by anyone else; redirects that
carry a one-time message; PNG answers for charts.

Templates load when this module is imported: only apps that serve the UI import it.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.web.session import Session

TEMPLATES = Path(__file__).resolve().parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES))

FLASH_COOKIE = "flywheel_flash"  # one message for the page after a redirect
# Pages may load only this site's scripts, styles and images, and nobody may frame them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
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
    """Template ``name`` with ``context``, the session and the pending flash message."""
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


def png(data: bytes, max_age: int = 3600) -> Response:
    """A chart: the browser may keep it ``max_age`` seconds (its URL names its version)."""
    return Response(
        data, media_type="image/png", headers={"Cache-Control": f"private, max-age={max_age}"}
    )
