"""``POST /v1/predict``: classify an uploaded image (or a stored sample) with the champion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from api.auth import AnyKey, Context
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import PredictionOut
from flywheel.errors import InvalidInputError
from flywheel.serve.sample_access import grant, visible_sample
from flywheel.serve.serving import PredictionRecord, predict_sample, store_input

router = APIRouter(prefix="/v1", tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictionOut,
    status_code=201,
    responses={
        **COMMON_RESPONSES,
        404: {"model": ErrorResponse, "description": "unknown sample id, or another tenant's"},
        409: {"model": ErrorResponse, "description": "no champion model yet"},
        415: {"model": ErrorResponse, "description": "not an image"},
    },
)
async def predict(
    ctx: Context,
    key: AnyKey,
    file: Annotated[UploadFile | None, File(description="An image to classify")] = None,
    sample_id: Annotated[
        str | None, Form(min_length=64, max_length=64, description="Or a stored sample's id")
    ] = None,
    top_k: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> PredictionOut:
    """Classify one input. The input is stored (content-addressed) and so is the prediction."""
    if (file is None) == (sample_id is None):
        raise InvalidInputError("send exactly one of: an image file, or a sample_id")
    data = await file.read() if file is not None else None
    k = top_k or ctx.settings.api.top_k

    def work() -> PredictionRecord:
        serving = ctx.champion.current()
        sid = sample_id
        if data is not None:
            sid = store_input(
                ctx.ws.db, ctx.ws.blobs, data, ctx.settings.ingest, f"predict:{key.tenant}"
            )
            grant(ctx.ws.db, [sid], key.tenant)  # it sent these bytes: it may read them back
        assert sid is not None
        if data is None:
            visible_sample(ctx.ws.db, sid, key)  # another tenant's sample: 404, as if unknown
        return predict_sample(
            ctx.ws.db, ctx.ws.blobs, serving, sid, ctx.settings.learning, k, key.tenant, data
        )

    record = await run_in_threadpool(work)
    ctx.metrics.predictions.labels(record.model_version).inc()
    return PredictionOut.model_validate(record, from_attributes=True)
