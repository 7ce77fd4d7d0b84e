"""Dataset versions: list, inspect, diff and download the immutable label snapshots."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import Extended, Limit, Offset
from api.schemas_engineer import DiffOut, VersionOut, VersionPage
from flywheel.datasets.exports import export_version

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


MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}


@router.get(
    "/versions/{ref}/export",
    response_class=FileResponse,
    responses={
        **COMMON_RESPONSES,
        **NOT_FOUND,
        409: {
            "model": ErrorResponse,
            "description": "the manifest, or an image the version names, is missing from the "
            "store or fails its checksum",
        },
        200: {
            "description": "The file: a Parquet or CSV manifest, or a zip of the "
            "ImageFolder tree or the Hugging Face Parquet folder",
            "content": {"application/zip": {}, **{t: {} for t in MEDIA_TYPES.values()}},
        },
    },
)
def export(
    ref: Ref,
    ctx: Context,
    key: EngineerKey,
    format: Annotated[
        Literal["parquet", "csv", "imagefolder", "hf"], Query(description="The layout")
    ] = "parquet",
) -> FileResponse:
    """A version as a download, in the layouts of `flywheel data export`: `parquet` or
    `csv` (the manifest), `imagefolder` (a zip of `<split>/<class>/<sample id>.<ext>` that
    torchvision's ImageFolder reads) or `hf` (a zip of Parquet shards with the images
    embedded, for Hugging Face `load_dataset("parquet", data_dir=...)`)."""
    version = ctx.ws.versions.resolve(ref)
    work = FilePath(tempfile.mkdtemp(prefix="flywheel-export-"))
    cleanup = BackgroundTask(shutil.rmtree, work, ignore_errors=True)
    try:
        name = f"{version.id[:12]}-{format}"
        if format in MEDIA_TYPES:
            out = work / f"{name}.{format}"
            export_version(ctx.ws.versions, ctx.ws.blobs, version.id, out, format)
            return FileResponse(out, media_type=MEDIA_TYPES[format], filename=out.name,
                                background=cleanup)  # fmt: skip
        tree = work / name
        export_version(ctx.ws.versions, ctx.ws.blobs, version.id, tree, format)
        out = work / f"{name}.zip"
        # Stored, not deflated: the images and Parquet shards are compressed already.
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(tree.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(tree).as_posix())
        return FileResponse(out, media_type="application/zip", filename=out.name,
                            background=cleanup)  # fmt: skip
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
