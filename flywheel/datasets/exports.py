"""A dataset version in another tool's layout: ``flywheel data export V --format ...``.

- ``parquet`` / ``csv``: the manifest itself (one row per label, with its provenance).
- ``imagefolder``: ``<dest>/<split>/<class>/<sample id>.<ext>``, the image bytes as stored;
  torchvision's ``ImageFolder(<dest>/train)`` reads a split. A class name that is not a safe
  folder name is percent-encoded (``classes.json`` maps folders back to class names).
- ``hf``: Parquet shards ``<dest>/data/<split>-00000-of-0000N.parquet`` with the image bytes
  embedded and the Hugging Face ``datasets`` features (``Image``, ``ClassLabel``) in their
  schema metadata: ``load_dataset("parquet", data_dir=<dest>)`` gives one split per split.

Images are read from the blob store in batches and written as they come: an export's memory
does not grow with the version's size. Every split is sorted by sample id, so the same
version always exports to the same files.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from flywheel.datasets.versions import DatasetVersions
from flywheel.errors import IntegrityError, InvalidInputError
from flywheel.store.blobs import READ_BATCH, BlobStore, unusable_reason

ExportFormat = Literal["parquet", "csv", "imagefolder", "hf"]
FORMATS: tuple[str, ...] = ("parquet", "csv", "imagefolder", "hf")
# Image formats torchvision's ImageFolder opens, by what PIL calls them: written as stored.
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif", "WEBP": "webp"}
HF_ROWS_PER_SHARD = 10_000  # about 1 GB of 100 KB photos per file
HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets' Image type


@dataclass
class ExportReport:
    path: Path
    format: str
    rows: int = 0
    by_split: dict[str, int] = field(default_factory=dict)


def export_version(
    versions: DatasetVersions, blobs: BlobStore, ref: str, dest: Path, fmt: str
) -> ExportReport:
    """Write version ``ref`` to ``dest`` (a file for parquet/csv, a new folder otherwise)."""
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    dest = Path(dest)
    if fmt in ("parquet", "csv"):
        path = versions.export(ref, dest, fmt)  # type: ignore[arg-type]
        return ExportReport(path, fmt, versions.resolve(ref).num_rows)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidInputError(f"{dest} exists and is not an empty folder: export into a new one")
    _, table = versions.read(ref)
    table = table.sort_by([("split", "ascending"), ("sample_id", "ascending")])
    classes = sorted(set(table["label"].to_pylist()))
    report = ExportReport(dest, fmt)
    staging = dest.with_name(dest.name + ".partial")  # a failed export leaves no half tree
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write = _imagefolder if fmt == "imagefolder" else _hf
    try:
        for split in sorted(set(table["split"].to_pylist())):
            rows = table.filter(pc.equal(table["split"], split))
            report.by_split[split] = rows.num_rows
            report.rows += rows.num_rows
            write(staging, split, rows, classes, blobs)
        if fmt == "imagefolder":
            folders = {folder_name(c): c for c in classes}
            text = json.dumps(folders, indent=1, ensure_ascii=False)
            (staging / "classes.json").write_text(text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists():
        dest.rmdir()
    staging.rename(dest)
    return report


def folder_name(label: str) -> str:
    """A class name as one safe folder name: no separators, no "." or "..", no controls."""
    name = quote(label, safe=" -_.()+,=@")
    return name.replace(".", "%2E") if set(name) == {"."} else name


def _images(blobs: BlobStore, ids: list[str]) -> Iterator[tuple[str, bytes]]:
    for start in range(0, len(ids), READ_BATCH):
        batch = ids[start : start + READ_BATCH]
        for sid, got in zip(batch, blobs.get_many(batch), strict=True):
            reason = unusable_reason(got)  # a storage outage is raised as it is
            if reason is not None:
                # The version names a sample the store no longer serves: a conflict between
                # the two, not a bad request.
                raise IntegrityError(f"cannot export sample {sid}: {reason}")
            yield sid, got


def _as_file(data: bytes) -> tuple[bytes, str]:
    """The bytes and extension to write: as stored when ImageFolder opens that format,
    else re-encoded as PNG."""
    with Image.open(io.BytesIO(data)) as img:
        ext = EXTENSIONS.get(img.format or "")
        if ext is not None:
            return data, ext
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue(), "png"


def _imagefolder(
    root: Path, split: str, rows: pa.Table, classes: list[str], blobs: BlobStore
) -> None:
    labels = dict(zip(rows["sample_id"].to_pylist(), rows["label"].to_pylist(), strict=True))
    for sid, data in _images(blobs, list(labels)):
        folder = root / folder_name(split) / folder_name(labels[sid])
        folder.mkdir(parents=True, exist_ok=True)
        data, ext = _as_file(data)
        (folder / f"{sid}.{ext}").write_bytes(data)


def _hf_schema(classes: list[str]) -> pa.Schema:
    features = {
        "image": {"_type": "Image"},
        "label": {"_type": "ClassLabel", "names": classes},
        "sample_id": {"dtype": "string", "_type": "Value"},
        "source": {"dtype": "string", "_type": "Value"},
        "confidence": {"dtype": "float64", "_type": "Value"},
    }
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(
        [
            ("image", HF_IMAGE),
            ("label", pa.int64()),
            ("sample_id", pa.string()),
            ("source", pa.string()),
            ("confidence", pa.float64()),
        ],
        metadata=meta,
    )


def _hf(root: Path, split: str, rows: pa.Table, classes: list[str], blobs: BlobStore) -> None:
    schema = _hf_schema(classes)
    index = {c: i for i, c in enumerate(classes)}
    shards = max(1, -(-rows.num_rows // HF_ROWS_PER_SHARD))
    (root / "data").mkdir(exist_ok=True)
    for shard in range(shards):
        part = rows.slice(shard * HF_ROWS_PER_SHARD, HF_ROWS_PER_SHARD)
        path = root / "data" / f"{folder_name(split)}-{shard:05d}-of-{shards:05d}.parquet"
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for start in range(0, part.num_rows, READ_BATCH):  # one row group per read batch
                chunk = part.slice(start, READ_BATCH)
                ids = chunk["sample_id"].to_pylist()
                images = [{"bytes": data, "path": sid} for sid, data in _images(blobs, ids)]
                columns = [
                    pa.array(images, HF_IMAGE),
                    pa.array([index[x] for x in chunk["label"].to_pylist()], pa.int64()),
                    chunk["sample_id"],
                    chunk["source"],
                    chunk["confidence"],
                ]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
