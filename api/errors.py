"""Every expected failure becomes a JSON error ``{"error": {"code", "message"}}`` with a 4xx.

Library errors map by type; request-validation errors keep FastAPI's details; an
unexpected exception is a bug and answers 500 without leaking internals.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from flywheel.errors import (
    BusyError,
    ConflictError,
    FlywheelError,
    ForbiddenError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnsupportedMediaError,
)
from flywheel.feedback.writer import IdempotencyMismatchError
from flywheel.serve.api_keys import AuthenticationError
from flywheel.serve.serving import NoModelError
from flywheel.text import UNSAFE_CHARS

log = logging.getLogger("flywheel.api")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# Most specific first: IdempotencyMismatchError is an InvalidInputError.
STATUS: list[tuple[type[Exception], int, str]] = [
    (IdempotencyMismatchError, 422, "idempotency_key_reused"),
    (UnsupportedMediaError, 415, "unsupported_media"),
    (NotFoundError, 404, "not_found"),
    (ForbiddenError, 403, "forbidden"),
    (ConflictError, 409, "conflict"),
    (BusyError, 503, "busy"),
    (NoModelError, 409, "no_model"),
    (InvalidInputError, 422, "invalid_input"),
    (IntegrityError, 409, "integrity"),
    (FlywheelError, 400, "bad_request"),
]

# For the OpenAPI document: what each route may answer besides success.
COMMON_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (401, "missing, unknown or revoked API key"),
        (403, "the key's role or tenant may not do this"),
        (413, "request body too large"),
        (422, "invalid input"),
    ]
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": body}, status_code=status, headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


def status_for(exc: Exception) -> tuple[int, str]:
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal"


def _message(error: dict) -> str:
    # Say what the text-safety rule refuses instead of quoting its long character class.
    pattern = str((error.get("ctx") or {}).get("pattern", ""))
    if error.get("type") == "string_pattern_mismatch" and UNSAFE_CHARS in pattern:
        return "must not contain control characters or invisible formatting characters"
    return str(error.get("msg", ""))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FlywheelError)
    async def flywheel_error(_: Request, exc: FlywheelError) -> JSONResponse:
        status, code = status_for(exc)
        # A busy service says when to come back, so well-behaved clients back off.
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(status, code, str(exc), headers=headers)

    @app.exception_handler(AuthenticationError)
    async def auth_error(_: Request, exc: AuthenticationError) -> JSONResponse:
        return error_response(401, "unauthorized", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": _message(e), "type": e.get("type")}
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "the request is malformed", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, headers = exc.status_code, dict(exc.headers or {})
        if status == 400:  # FastAPI's "error parsing the body" (e.g. bytes that are not JSON)
            return error_response(422, "invalid_request", f"the request is malformed: {exc.detail}")
        if status == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        code = "body_too_large" if status == 413 else f"http_{status}"
        return error_response(status, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error: see the server log")
