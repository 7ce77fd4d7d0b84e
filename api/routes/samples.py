"""Upload samples into the pool (files or blob URIs) and read them back."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.convertors import StringConvertor, register_url_convertor

from api.auth import AnyKey, Context
from api.context import ApiContext
from api.errors import COMMON_RESPONSES, ErrorResponse, error_response
from api.schemas import SAFE_TEXT, Extended
from api.schemas_engineer import IngestOut, SampleOut, SampleUrisIn
from flywheel.db import Sample
from flywheel.db.models import Split
from flywheel.errors import ForbiddenError, InvalidInputError
from flywheel.serve.api_keys import KeyInfo
from flywheel.serve.sample_access import grant, visible_sample
from flywheel.store.ingest import Candidate, IngestReport, SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import prefetched_candidates
from flywheel.store.remote_reads import ReadFailed
from flywheel.store.remote_sources import RemoteObject, UriRefused
from flywheel.text import replace_unsafe

router = APIRouter(prefix="/v1", tags=["samples"])


class Sha256Convertor(StringConvertor):
    """Only a sha256 matches ``{sample_id:sha256}``, so ``GET /v1/samples/uris`` is not a
    malformed sample id (422) but a method the path does not take (405)."""

    regex = "[0-9a-f]{64}"


register_url_convertor("sha256", Sha256Convertor())
SampleId = Annotated[
    str, Path(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$", description="sha256")
]
UPLOAD_RESPONSES: dict[int | str, dict] = {
    **COMMON_RESPONSES,
    403: {"model": ErrorResponse, "description": "an app key set a label or split"},
    415: {"model": ErrorResponse, "description": "every input is a non-image"},
    422: {"model": ErrorResponse, "description": "every input was rejected, or bad input"},
}
# Fixed, not PIL's registry: that one fills only once a plugin has been loaded.
MEDIA_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "BMP": "image/bmp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "WEBP": "image/webp",
}
READ_RESPONSES: dict[int | str, dict] = {
    **COMMON_RESPONSES,
    404: {"model": ErrorResponse, "description": "unknown sample id, or another tenant's"},
}


def _ingest(ctx: Context, key: KeyInfo, candidates: list[Candidate]) -> IngestOut | JSONResponse:
    report: IngestReport = ingest_candidates(
        ctx.ws.db,
        ctx.ws.blobs,
        candidates,
        f"upload:{key.tenant}",
        ctx.settings.ingest,
        SplitPlan(),
    )
    # Duplicates too: this tenant sent (or points at) those bytes, so it may read them back.
    grant(ctx.ws.db, report.sample_ids + report.duplicate_ids, key.tenant)
    out = IngestOut.model_validate(report, from_attributes=True)
    if report.added == 0 and not report.duplicates:
        # Every input was refused (and so nothing was written): the request failed.
        none_images = all(r.not_an_image for r in report.rejected)
        status, code = (415, "unsupported_media") if none_images else (422, "invalid_input")
        return error_response(
            status,
            code,
            f"all {len(out.rejected)} inputs were rejected; first: {out.rejected[0].reason}",
            [r.model_dump() for r in out.rejected],
        )
    return out


def _check(ctx: Context, key: KeyInfo, count: int, sets_label_or_split: bool) -> None:
    if sets_label_or_split and not key.is_engineer:
        raise ForbiddenError("only engineer keys may set a label or split")
    limit = ctx.settings.api.max_batch_items
    if count > limit:
        raise InvalidInputError(f"{count} inputs: one request takes at most {limit}")


@router.post(
    "/samples",
    response_model=IngestOut,
    status_code=201,
    responses={
        **UPLOAD_RESPONSES,
        400: {"model": ErrorResponse, "description": "a malformed multipart body"},
    },
)
async def upload_samples(
    ctx: Context,
    key: AnyKey,
    files: Annotated[list[UploadFile], File(description="One or more images")],
    label: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=200,
            pattern=SAFE_TEXT,
            description="Engineer keys only: for every file",
        ),
    ] = None,
    split: Annotated[Split | None, Form(description="Engineer keys only")] = None,
) -> IngestOut | JSONResponse:
    """Add images to the pool (deduplicated by content). Engineer keys may label them.

    Rejected files are listed and not stored; if every file is rejected the answer is 415
    (none is an image) or 422.
    """
    _check(ctx, key, len(files), label is not None or split is not None)
    candidates = []
    for i, f in enumerate(files):
        data = await f.read()
        # A name is stored as given, except for characters a terminal or page would obey.
        name = replace_unsafe(f.filename or "") or f"file {i + 1}"
        candidates.append(Candidate(name, lambda d=data: d, label, split.value if split else None))
    return await run_in_threadpool(_ingest, ctx, key, candidates)


@router.post(
    "/samples/uris",
    response_model=IngestOut,
    status_code=201,
    responses={
        **UPLOAD_RESPONSES,
        403: {"model": ErrorResponse, "description": "the key may not register URIs or labels"},
        503: {"model": ErrorResponse, "description": "too many remote reads in progress"},
    },
)
async def upload_sample_uris(
    body: SampleUrisIn, ctx: Context, key: AnyKey
) -> IngestOut | JSONResponse:
    """Add images by blob URI. Each must lie under a configured source root
    (``ingest.uri_roots``) and be a plain ``scheme://bucket/key``: no query, user info, port
    or dot segments. A refused URI fails the whole request (422, naming the rule) and nothing
    is written. Objects that cannot be read are listed as rejected, with a generic reason.
    """
    ingest = ctx.settings.ingest
    if not key.is_engineer and not ingest.app_keys_may_register_uris:
        raise ForbiddenError(
            "app keys may not register URIs (setting ingest.app_keys_may_register_uris)"
        )
    setting = any(item.label is not None or item.split is not None for item in body.items)
    _check(ctx, key, len(body.items), setting)
    checked = ctx.remote_policy.check_all([item.uri for item in body.items])
    refused = [(i, c) for i, c in enumerate(checked) if isinstance(c, UriRefused)]
    if refused:
        details = [{"item": i + 1, "rule": c.rule, "reason": str(c)} for i, c in refused]
        first = details[0]
        return error_response(
            422,
            "uri_refused",
            f"{len(refused)} of {len(checked)} URIs refused; item {first['item']}: "
            f"{first['reason']}",
            details,
        )
    objects = [c for c in checked if isinstance(c, RemoteObject)]
    fetched = await _read_remote(ctx, objects)
    rows = [
        {"uri": obj.uri, "label": item.label, "split": item.split.value if item.split else None}
        for obj, item in zip(objects, body.items, strict=True)
    ]
    return await run_in_threadpool(_ingest, ctx, key, prefetched_candidates(rows, fetched))


async def _read_remote(ctx: ApiContext, objects: list[RemoteObject]) -> list[bytes | Exception]:
    """Read on the remote pool, awaited here: no request thread waits on a remote."""
    futures = ctx.remote_reader.submit(objects)  # BusyError (503) when the queue is full
    waiting = [asyncio.wrap_future(f) for f in futures]
    try:
        await asyncio.wait(waiting, timeout=ctx.settings.ingest.remote_total_timeout_s)
    except asyncio.CancelledError:  # the server is stopping: drop the reads still queued
        for future in futures:
            future.cancel()
        raise
    out: list[bytes | Exception] = []
    for waited in waiting:
        if not waited.done():
            waited.cancel()  # a queued read is dropped; a running one ends by its timeouts
            out.append(ReadFailed("timed out"))
        elif waited.cancelled():
            out.append(ReadFailed("timed out"))
        else:
            exc = waited.exception()
            out.append(exc if isinstance(exc, Exception) else waited.result())
    return out


def _sample(ctx: Context, key: KeyInfo, sample_id: str) -> Sample:
    return visible_sample(ctx.ws.db, sample_id, key)  # another tenant's: 404, as if unknown


def _media_type(fmt: str) -> str:
    return MEDIA_TYPES.get(fmt.upper(), "application/octet-stream")


@router.get("/samples/{sample_id:sha256}", response_model=SampleOut, responses=READ_RESPONSES)
def get_sample(sample_id: SampleId, ctx: Context, key: AnyKey) -> SampleOut:
    """A stored sample's metadata (a sample this key's tenant sent; any, for engineers)."""
    row = _sample(ctx, key, sample_id)
    media_type = _media_type(row.format)
    return SampleOut.model_validate(Extended(row, media_type=media_type), from_attributes=True)


@router.get(
    "/samples/{sample_id:sha256}/image",
    response_class=Response,
    responses={
        **READ_RESPONSES,
        200: {
            "content": {t: {} for t in [*MEDIA_TYPES.values(), "application/octet-stream"]},
            "description": "The stored bytes",
        },
        409: {"model": ErrorResponse, "description": "the stored bytes fail their checksum"},
    },
)
def get_sample_image(sample_id: SampleId, ctx: Context, key: AnyKey) -> Response:
    """A stored sample's bytes, with its image media type (visible as for its metadata)."""
    row = _sample(ctx, key, sample_id)
    data = ctx.ws.blobs.get(row.id)  # verified against its sha256: IntegrityError is a 409
    return Response(data, media_type=_media_type(row.format))
