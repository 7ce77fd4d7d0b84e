"""``POST /v1/feedback`` and its batch form: durable before answered, idempotent by key."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Response

from api.auth import AnyKey, Context
from api.context import ApiContext
from api.errors import COMMON_RESPONSES, ErrorResponse, status_for
from api.schemas import (
    SAFE_TEXT,
    ErrorInfo,
    Extended,
    FeedbackBatchIn,
    FeedbackBatchOut,
    FeedbackBatchResult,
    FeedbackIn,
    FeedbackOut,
)
from flywheel.errors import InvalidInputError
from flywheel.feedback.writer import FeedbackOutcome, FeedbackRecord, FeedbackRequest
from flywheel.serve.api_keys import KeyInfo

router = APIRouter(prefix="/v1", tags=["feedback"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        pattern=SAFE_TEXT,
        description="Replays return the first answer; reuse with another body is a 422",
    ),
]


def feedback_out(r: FeedbackRecord, replayed: bool) -> FeedbackOut:
    return FeedbackOut.model_validate(Extended(r, replayed=replayed), from_attributes=True)


def _request(item: FeedbackIn, key: KeyInfo, idem: str | None) -> FeedbackRequest:
    return FeedbackRequest(
        prediction_id=item.prediction_id,
        kind=item.kind,
        user_id=item.user_id,
        label=item.label,
        tenant=key.tenant,
        cross_tenant=key.is_engineer,
        idempotency_key=idem,
    )


async def _submit(ctx: ApiContext, requests: list[FeedbackRequest]) -> list[FeedbackOutcome]:
    futures = ctx.writer.submit(requests)
    outcomes = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    for req, out in zip(requests, outcomes, strict=True):
        state = "refused" if out.error else "replayed" if out.replayed else "written"
        ctx.metrics.feedback.labels(req.kind.value, state).inc()
    return list(outcomes)


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    responses={
        **COMMON_RESPONSES,
        200: {"model": FeedbackOut, "description": "a replay of an earlier request"},
        404: {"model": ErrorResponse, "description": "unknown prediction id"},
        409: {"model": ErrorResponse, "description": "a request with this key is in flight"},
    },
)
async def feedback(
    body: FeedbackIn,
    ctx: Context,
    key: AnyKey,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> FeedbackOut:
    """Confirm, correct or reject a prediction. Answered only once it is committed."""
    (outcome,) = await _submit(ctx, [_request(body, key, idempotency_key)])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.record is not None
    if outcome.replayed:
        response.status_code = 200
    return feedback_out(outcome.record, outcome.replayed)


@router.post(
    "/feedback/batch",
    response_model=FeedbackBatchOut,
    responses=COMMON_RESPONSES,
)
async def feedback_batch(
    body: FeedbackBatchIn,
    ctx: Context,
    key: AnyKey,
    idempotency_key: IdempotencyKey = None,
) -> FeedbackBatchOut:
    """Many feedback items (apps that buffer); one result per item, committed together."""
    if len(body.items) > ctx.settings.api.max_batch_items:
        raise InvalidInputError(
            f"{len(body.items)} items: a batch takes at most {ctx.settings.api.max_batch_items}"
        )
    requests = [
        _request(
            item,
            key,
            item.idempotency_key or (f"{idempotency_key}/{i}" if idempotency_key else None),
        )
        for i, item in enumerate(body.items)
    ]
    outcomes = await _submit(ctx, requests)
    results = []
    for i, out in enumerate(outcomes):
        if out.error is not None:
            status, code = status_for(out.error)
            results.append(
                FeedbackBatchResult(
                    index=i, status=status, error=ErrorInfo(code=code, message=str(out.error))
                )
            )
        else:
            assert out.record is not None
            results.append(
                FeedbackBatchResult(
                    index=i,
                    status=200 if out.replayed else 201,
                    feedback=feedback_out(out.record, out.replayed),
                )
            )
    return FeedbackBatchOut(
        written=sum(1 for o in outcomes if o.record and not o.replayed),
        replayed=sum(1 for o in outcomes if o.replayed),
        failed=sum(1 for o in outcomes if o.error),
        results=results,
    )
