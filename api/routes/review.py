"""The human review queue: list items, accept (writes a human label) or reject them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import MAX_ID, SAFE_TEXT, Limit, Offset
from api.schemas_engineer import ReviewDecisionIn, ReviewOut, ReviewPage
from flywheel.db.models import ReviewState
from flywheel.feedback.review import decide_review, list_review
from flywheel.serve.api_keys import KeyInfo

router = APIRouter(prefix="/v1/review", tags=["review"])


def default_reviewer(key: KeyInfo) -> str:
    """The key's name and id, within the 200 characters the column holds."""
    suffix = f" [{key.id}]"
    return key.name[: 200 - len(suffix)] + suffix


@router.get("", response_model=ReviewPage, responses=COMMON_RESPONSES)
def list_items(
    ctx: Context,
    key: EngineerKey,
    state: ReviewState = ReviewState.OPEN,
    label: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=SAFE_TEXT, description="The proposed label"),
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    order: Annotated[
        Literal["queued", "helpful"],
        Query(description="queued: oldest first; helpful: most worth a reviewer's time first"),
    ] = "queued",
) -> ReviewPage:
    """Review items of one state (default open) with the total count, oldest first or
    most helpful first (conflicts and audit items, then the least certain, classes in turn)."""
    page = list_review(ctx.ws.db, state, label, limit, offset, order)
    return ReviewPage.model_validate(page, from_attributes=True)


@router.post(
    "/{item_id}",
    response_model=ReviewOut,
    responses={
        **COMMON_RESPONSES,
        404: {"model": ErrorResponse, "description": "unknown review item"},
        409: {"model": ErrorResponse, "description": "the item was decided already"},
        422: {"model": ErrorResponse, "description": "a label outside the label set, or bad input"},
    },
)
def decide(
    body: ReviewDecisionIn,
    ctx: Context,
    key: EngineerKey,
    item_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> ReviewOut:
    """Accept (with the proposed label, or another one from the label set) or reject.

    Accepting writes a `human` label that reaches the next dataset version; rejecting
    retracts the sample's pseudo or feedback label.
    """
    record = decide_review(
        ctx.ws.db,
        item_id,
        body.decision,
        body.reviewer or default_reviewer(key),
        body.label,
        ctx.labels(),
    )
    return ReviewOut.model_validate(record, from_attributes=True)
