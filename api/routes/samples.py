"""Upload samples into the pool (files or blob URIs) and read them back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.convertors import StringConvertor, register_url_convertor

from api.auth import AnyKey, Context
from api.errors import COMMON_RESPONSES, ErrorResponse, error_response
from api.schemas_engineer import NO_NUL, IngestOut, Rejected, SampleOut, SampleUrisIn
from flywheel.api_keys import KeyInfo
from flywheel.db import Sample
from flywheel.db.models import Split
from flywheel.errors import ForbiddenError, InvalidInputError, NotFoundError
from flywheel.ingest import Candidate, IngestReport, SplitPlan, ingest_candidates, remote_candidates

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
    404: {"model": ErrorResponse, "description": "unknown sample id"},
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
    rejected = [Rejected(name=r.name, reason=r.reason) for r in report.rejected]
    if report.added == 0 and not report.duplicates:
        # Every input was refused (and so nothing was written): the request failed.
        none_images = all(r.not_an_image for r in report.rejected)
        status, code = (415, "unsupported_media") if none_images else (422, "invalid_input")
        return error_response(
            status,
            code,
            f"all {len(rejected)} inputs were rejected; first: {rejected[0].reason}",
            [r.model_dump() for r in rejected],
        )
    return IngestOut(
        added=report.added,
        duplicates=report.duplicates,
        rejected=rejected,
        sample_ids=report.sample_ids,
    )


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
            pattern=NO_NUL,
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
        # A name is stored as given, except for NUL (PostgreSQL text cannot hold it).
        name = (f.filename or "").replace("\x00", "\ufffd") or f"file {i + 1}"
        candidates.append(Candidate(name, lambda d=data: d, label, split.value if split else None))
    return await run_in_threadpool(_ingest, ctx, key, candidates)


@router.post("/samples/uris", response_model=IngestOut, status_code=201, responses=UPLOAD_RESPONSES)
def upload_sample_uris(body: SampleUrisIn, ctx: Context, key: AnyKey) -> IngestOut | JSONResponse:
    """Add images by blob URI (allowed schemes only; local paths are refused)."""
    setting = any(item.label is not None or item.split is not None for item in body.items)
    _check(ctx, key, len(body.items), setting)
    rows = [
        {"uri": i.uri, "label": i.label, "split": i.split.value if i.split else None}
        for i in body.items
    ]
    return _ingest(ctx, key, remote_candidates(rows, ctx.settings.ingest.uri_schemes))


def _sample(ctx: Context, sample_id: str) -> Sample:
    with ctx.ws.db.session() as s:
        row = s.get(Sample, sample_id)
    if row is None:
        raise NotFoundError(f"no sample {sample_id}")
    return row


def _media_type(fmt: str) -> str:
    return MEDIA_TYPES.get(fmt.upper(), "application/octet-stream")


@router.get("/samples/{sample_id:sha256}", response_model=SampleOut, responses=READ_RESPONSES)
def get_sample(sample_id: SampleId, ctx: Context, key: AnyKey) -> SampleOut:
    """A stored sample's metadata."""
    row = _sample(ctx, sample_id)
    return SampleOut(
        sample_id=row.id,
        source=row.source,
        split=row.split,
        original_name=row.original_name,
        format=row.format,
        media_type=_media_type(row.format),
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        created_at=row.created_at,
    )


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
    """A stored sample's bytes, with its image media type."""
    row = _sample(ctx, sample_id)
    data = ctx.ws.blobs.get(row.id)  # verified against its sha256: IntegrityError is a 409
    return Response(data, media_type=_media_type(row.format))
