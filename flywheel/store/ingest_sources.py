"""Where ingested images come from: each source turns its input into ``Candidate``s for
:func:`flywheel.store.ingest.ingest_candidates` (an ImageFolder tree, a manifest of URIs,
the built-in digits, or bytes already read from remote sources)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from flywheel.config import IngestSettings
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.store.ingest import Candidate
from flywheel.store.remote_reads import RemoteReader
from flywheel.store.remote_sources import RemoteSourcePolicy

# torchvision's ImageFolder convention.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        if not path.is_file():
            raise NotFoundError("file not found")
        return path.read_bytes()

    return read


def _unsupported(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise InvalidInputError(reason)

    return read


def imagefolder_candidates(root: Path) -> list[Candidate]:
    """``root/<class>/<img>`` is labeled with ``<class>``; images directly in ``root`` are not.

    Files with other extensions are listed (and so rejected with a reason), not skipped
    silently; hidden files are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotFoundError(f"not a directory: {root}")
    out: list[Candidate] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or any(part.startswith(".") for part in rel.parts):
            continue
        label = rel.parts[0] if len(rel.parts) > 1 else None
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            read = _file_reader(path)
        else:
            read = _unsupported(f"unsupported file type {path.suffix or '(none)'!r}")
        out.append(Candidate(str(rel), read, label))
    return out


def _uri_reader(
    uri: str, base_dir: Path, policy: RemoteSourcePolicy, reader: RemoteReader
) -> Callable[[], bytes]:
    if "://" not in uri or uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        return _file_reader(path if path.is_absolute() else base_dir / path)
    # Strictly parsed (UriRefused names the rule), read by a client built from settings.
    return lambda: reader.read(policy.check(uri))


def uri_reader(
    base_dir: Path, settings: IngestSettings, reader: RemoteReader | None = None
) -> Callable[[str], Callable[[], bytes]]:
    """``read(uri)`` -> the reader of one image named in an operator's own file (a manifest,
    an export of another tool): paths relative to ``base_dir``, remote URIs with one of
    ``uri_schemes`` (not necessarily under ``uri_roots``) parsed as strictly as URIs sent
    over HTTP, and read by a client built from settings with its timeouts."""
    policy = RemoteSourcePolicy(settings.uri_roots, settings.uri_schemes, require_root=False)
    client = reader or RemoteReader(settings)
    return lambda uri: _uri_reader(uri, base_dir, policy, client)


def prefetched_candidates(
    rows: Sequence[dict[str, str | None]], fetched: Sequence[bytes | Exception]
) -> list[Candidate]:
    """Rows ``{uri, label?, split?}`` whose bytes were already read (or failed to be)."""
    out = []
    for i, (row, got) in enumerate(zip(rows, fetched, strict=True)):
        out.append(
            Candidate(
                f"item {i + 1}: {row['uri']}", _result(got), row.get("label"), row.get("split")
            )
        )
    return out


def _result(got: bytes | Exception) -> Callable[[], bytes]:
    def read() -> bytes:
        if isinstance(got, Exception):
            raise got
        return got

    return read


def manifest_candidates(
    path: Path, settings: IngestSettings, reader: RemoteReader | None = None
) -> list[Candidate]:
    """Rows of a Parquet or CSV manifest: ``uri`` (required), ``label`` and ``split`` optional.

    Relative paths are resolved against the manifest's folder. A manifest is the operator's
    own file, so its remote URIs need not lie under ``uri_roots``; they must still use one
    of ``uri_schemes``, are parsed as strictly as URIs sent over HTTP, and are read by a
    client built from settings (a root's options where one matches), with its timeouts.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        else:
            raise InvalidInputError(f"manifest must be .parquet or .csv, not {suffix!r}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"cannot read manifest {path}: {exc}") from exc
    if rows and "uri" not in rows[0]:
        raise InvalidInputError(f"manifest {path} has no 'uri' column")
    read = uri_reader(path.parent, settings, reader)
    out = []
    for i, row in enumerate(rows):
        uri = row.get("uri")
        name = f"row {i + 1}: {uri}"
        label = row.get("label")
        split = row.get("split")
        label = None if label in (None, "") else str(label)
        split = None if split in (None, "") else str(split)
        if not isinstance(uri, str) or not uri:
            out.append(Candidate(f"row {i + 1}", _unsupported("missing uri"), label, split))
            continue
        out.append(Candidate(name, read(uri), label, split))
    return out


def digits_candidates() -> list[Candidate]:
    """sklearn's 1,797 real 8x8 digit scans as 8-bit grayscale PNGs, labeled "0".."9"."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        # The scans are 0..16 intensities; scale to the full 8-bit range.
        img = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8), mode="L")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
        out.append(Candidate(f"digits/{i:04d}", lambda d=data: d, str(int(target))))
    return out
