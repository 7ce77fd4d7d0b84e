"""Dataset versions: list, inspect and diff the immutable label snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas_engineer import DiffCounts, DiffOut, DiffRow, VersionOut, VersionPage
from flywheel.datasets.versions import VersionInfo

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


def version_out(v: VersionInfo) -> VersionOut:
    return VersionOut.model_validate(v, from_attributes=True)  # the same fields


@router.get("/versions", response_model=VersionPage, responses=COMMON_RESPONSES)
def list_versions(
    ctx: Context,
    key: EngineerKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> VersionPage:
    """Dataset versions, newest first, with per-class and per-source counts."""
    versions = ctx.ws.versions.list()[::-1]
    page = versions[offset : offset + limit]
    return VersionPage(
        items=[version_out(v) for v in page], total=len(versions), limit=limit, offset=offset
    )


@router.get(
    "/versions/{ref}", response_model=VersionOut, responses={**COMMON_RESPONSES, **NOT_FOUND}
)
def get_version(ref: Ref, ctx: Context, key: EngineerKey) -> VersionOut:
    """One version (an ambiguous prefix is a 422)."""
    return version_out(ctx.ws.versions.resolve(ref))


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
    return DiffOut(
        a=d.a,
        b=d.b,
        counts=DiffCounts(
            added=d.added.num_rows,
            removed=d.removed.num_rows,
            relabeled=d.relabeled.num_rows,
            reattributed=d.reattributed.num_rows,
        ),
        summary=[DiffRow(**row) for row in d.summary()],
    )
