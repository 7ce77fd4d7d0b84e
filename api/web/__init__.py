"""The web UI: review queue, label audit and cycle dashboard, for engineers, at ``/ui``.

Server-rendered Jinja2 pages with a little vanilla JavaScript (no build step, no CDN).
``install(app)`` adds the routes, the static files and the login redirects to an app.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.web.auth import CsrfRejected, LoginRequired, on_csrf_rejected, on_login_required

STATIC = Path(__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    from api.web import login, routes  # templates load at import: only for apps that serve

    app.include_router(login.router)
    app.include_router(routes.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(CsrfRejected, on_csrf_rejected)
