"""API-key authentication and roles, as FastAPI dependencies.

``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). No key, an unknown or revoked
key → 401; a key whose role lacks the route → 403.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext
from flywheel.errors import ForbiddenError
from flywheel.serve.api_keys import AuthenticationError, KeyInfo

bearer = HTTPBearer(auto_error=False, description="An API key: `flywheel keys create`")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False)


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the
# thread pool, two thread round trips per request for what is usually a dict lookup.
async def get_context(request: Request) -> ApiContext:
    return request.app.state.ctx


Context = Annotated[ApiContext, Depends(get_context)]


async def require_key(
    ctx: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    api_key: Annotated[str | None, Security(header_key)],
) -> KeyInfo:
    token = credentials.credentials if credentials is not None else api_key
    if not token:
        raise AuthenticationError("an API key is required (Authorization: Bearer <key>)")
    cached = ctx.cached_key(token)
    if cached is not None:
        return cached
    return await run_in_threadpool(ctx.authenticate, token)  # a miss reads the database


async def require_engineer(key: Annotated[KeyInfo, Depends(require_key)]) -> KeyInfo:
    if not key.is_engineer:
        raise ForbiddenError("this route needs an engineer key")
    return key


AnyKey = Annotated[KeyInfo, Depends(require_key)]
EngineerKey = Annotated[KeyInfo, Depends(require_engineer)]
