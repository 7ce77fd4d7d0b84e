"""Dataset versions: list, inspect and diff the immutable label snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import Extended, Limit, Offset
from api.schemas_engineer import DiffOut, VersionOut, VersionPage

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

# "latest", or a full id or unique prefix of one (ids are lowercase sha256 hex).
REF_PATTERN = "^(latest|[0-9a-f]{4,64})$"
REF_DOC = "`latest`, a version id, or a unique prefix of one (4+ hex characters)"
Ref = Annotated[str, Path(min_length=4, max_length=64, pattern=REF_PATTERN, description=REF_DOC)]
NOT_FOUND = {
    404: {"model": ErrorResponse, "description": "unknown version"},
}
UNREADABLE = {
    409: {"model": ErrorResponse, "description": "a manifest is missing or fails its checksum"},
}


@router.get("/versions", response_model=VersionPage, responses=COMMON_RESPONSES)
def list_versions(
    ctx: Context,
    key: EngineerKey,
    limit: Limit = 50,
    offset: Offset = 0,
) -> VersionPage:
    """Dataset versions, newest first, with per-class and per-source counts."""
    versions = ctx.ws.versions.list()[::-1]
    page = versions[offset : offset + limit]
    items = [VersionOut.model_validate(v, from_attributes=True) for v in page]
    return VersionPage(items=items, total=len(versions), limit=limit, offset=offset)


@router.get(
    "/versions/{ref}", response_model=VersionOut, responses={**COMMON_RESPONSES, **NOT_FOUND}
)
def get_version(ref: Ref, ctx: Context, key: EngineerKey) -> VersionOut:
    """One version (an ambiguous prefix is a 422)."""
    return VersionOut.model_validate(ctx.ws.versions.resolve(ref), from_attributes=True)


@router.get(
    "/diff", response_model=DiffOut, responses={**COMMON_RESPONSES, **NOT_FOUND, **UNREADABLE}
)
def diff(
    ctx: Context,
    key: EngineerKey,
    a: Annotated[str, Query(min_length=4, max_length=64, pattern=REF_PATTERN, description=REF_DOC)],
    b: Annotated[str, Query(min_length=4, max_length=64, pattern=REF_PATTERN, description=REF_DOC)],
) -> DiffOut:
    """What changed from version `a` to version `b`: counts per change, class and source."""
    d = ctx.ws.versions.diff(a, b)
    # The counts read d's tables; the summary is one row per (change, class, source).
    return DiffOut.model_validate(Extended(d, counts=d, summary=d.summary()), from_attributes=True)
