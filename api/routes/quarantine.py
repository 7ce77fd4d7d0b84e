"""Samples a cycle could not use, and putting them back (engineers only)."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.routes.samples import SampleId
from api.schemas import Limit, Offset
from api.schemas_engineer import QuarantinedOut, QuarantinePage
from flywheel.store import quarantine

router = APIRouter(prefix="/v1", tags=["quarantine"])
NOT_FOUND = {404: {"model": ErrorResponse, "description": "the sample is not in quarantine"}}


@router.get("/quarantine", response_model=QuarantinePage, responses=COMMON_RESPONSES)
def list_quarantined(
    ctx: Context, key: EngineerKey, limit: Limit = 50, offset: Offset = 0
) -> QuarantinePage:
    """Samples cycles skip (missing blob, checksum mismatch, undecodable), newest first."""
    items, total = quarantine.list_quarantine(ctx.ws.db, limit, offset)
    return QuarantinePage(
        items=[QuarantinedOut.model_validate(q, from_attributes=True) for q in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.delete(
    "/quarantine/{sample_id}",
    response_model=QuarantinedOut,
    responses={**COMMON_RESPONSES, **NOT_FOUND},
)
def release(ctx: Context, key: EngineerKey, sample_id: SampleId) -> QuarantinedOut:
    """Put a sample back: the next cycle tries it again (and quarantines it again if it
    is still unusable). Answers the released entry."""
    released = quarantine.release(ctx.ws.db, sample_id)
    return QuarantinedOut.model_validate(released, from_attributes=True)
