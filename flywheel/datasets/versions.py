"""Immutable, content-addressed dataset versions.

A version is the set of *current* labels (the newest label row per sample) frozen into a
Parquet manifest, one row per labeled sample with its provenance. Its id is the sha256 of
the rows' content (not of timestamps or DB-local ids), so the same labels always give the
same id on any database, and snapshotting unchanged labels returns the existing version.
The manifest is published write-once and its file checksum is verified on every read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from flywheel.datasets.fingerprint import Fingerprint
from flywheel.datasets.provenance import (
    MANIFEST_SCHEMA_VERSION,
    PROVENANCE_FIELDS,
    SCHEMA_KEY,
    provenance,
    upgrade,
)
from flywheel.db import Database, DatasetVersion, Label, Sample
from flywheel.db.labels import is_current
from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError
from flywheel.store import storage
from flywheel.store.blobs import sha256_hex

MANIFEST_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("blob_uri", pa.string()),
        ("split", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
        ("confidence", pa.float64()),
        ("method", pa.string()),
        ("cycle_id", pa.int64()),
        ("annotator", pa.string()),
        ("label_id", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        *PROVENANCE_FIELDS,  # what made each label (flywheel.datasets.provenance)
    ]
)
# What a version *is*: changing any of these changes the id. label_id and created_at are
# provenance that differs between databases holding the same labels.
# Bump when the manifest's content or layout changes: the same labels then get a new id.
MANIFEST_FORMAT = 1
CONTENT_COLUMNS = ("sample_id", "split", "label", "source", "confidence", "method", "cycle_id")


@dataclass(frozen=True)
class VersionInfo:
    id: str
    parent_id: str | None
    num_rows: int
    stats: dict[str, Any]
    message: str | None
    manifest_uri: str
    checksum: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: DatasetVersion) -> VersionInfo:
        return cls(
            row.id,
            row.parent_id,
            row.num_rows,
            row.stats,
            row.message,
            row.manifest_uri,
            row.checksum,
            row.created_at,
        )


@dataclass(frozen=True)
class VersionDiff:
    """Rows of ``b`` relative to ``a``, keyed by sample id."""

    a: str
    b: str
    added: pa.Table  # in b only
    removed: pa.Table  # in a only
    relabeled: pa.Table  # in both, label changed: sample_id, label_a, label_b, source_a, source_b
    reattributed: pa.Table  # same label, other source/confidence/method (e.g. pseudo -> human)

    def summary(self) -> list[dict[str, Any]]:
        """Counts per change, class and source, largest first."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for change, table in (("added", self.added), ("removed", self.removed)):
            for label, source in zip(
                table["label"].to_pylist(), table["source"].to_pylist(), strict=True
            ):
                counts[(change, label, source)] += 1
        for la, lb, sb in zip(
            self.relabeled["label_a"].to_pylist(),
            self.relabeled["label_b"].to_pylist(),
            self.relabeled["source_b"].to_pylist(),
            strict=True,
        ):
            counts[("relabeled", f"{la} -> {lb}", sb)] += 1
        for label, sb in zip(
            self.reattributed["label_b"].to_pylist(),
            self.reattributed["source_b"].to_pylist(),
            strict=True,
        ):
            counts[("reattributed", label, sb)] += 1
        return [
            {"change": c, "label": label, "source": s, "count": n}
            # Ties in count are ordered by class and source, so the summary is reproducible.
            for (c, label, s), n in sorted(
                counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1], kv[0][2])
            )
        ]


def content_id(table: pa.Table) -> str:
    """The fingerprint of the content columns of rows sorted by sample id (one canonical JSON
    line per row) and of the manifest format."""
    key = Fingerprint("dataset-version", MANIFEST_FORMAT)
    cols = [table[c].to_pylist() for c in CONTENT_COLUMNS]
    for row in zip(*cols, strict=True):
        key.add(json.dumps(row, separators=(",", ":")))
    return key.hexdigest()


def version_stats(table: pa.Table) -> dict[str, Any]:
    labels = table["label"].to_pylist()
    sources = table["source"].to_pylist()
    splits = table["split"].to_pylist()
    by_class_source: dict[str, Counter[str]] = {}
    by_class_split_source: dict[str, Counter[str]] = {}
    for label, split, source in zip(labels, splits, sources, strict=True):
        by_class_source.setdefault(label, Counter())[source] += 1
        by_class_split_source.setdefault(label, Counter())[f"{split}/{source}"] += 1
    return {
        "num_rows": table.num_rows,
        "classes": sorted(set(labels)),
        "by_split": dict(sorted(Counter(splits).items())),
        "by_source": dict(sorted(Counter(sources).items())),
        "by_class_source": {k: dict(v) for k, v in sorted(by_class_source.items())},
        # "train/seed", "pool/pseudo", ...: what the summary tables show.
        "by_class_split_source": {k: dict(v) for k, v in sorted(by_class_split_source.items())},
    }


class DatasetVersions:
    """Snapshot, list, read, diff and export versions of one project's labels."""

    def __init__(self, db: Database, storage_root: str) -> None:
        self.db = db
        self._loc = storage.open_location(storage_root)

    def _manifest_path(self, version_id: str) -> str:
        return self._loc.path("versions", f"{version_id}.parquet")

    # --- building ----------------------------------------------------------------
    def current_labels(self) -> pa.Table:
        """The newest label of every labeled sample, sorted by sample id.

        A sample whose newest row is a retraction has no current label.
        """
        query = (
            select(Label, Sample.blob_uri, Sample.split)
            .join(Sample, Sample.id == Label.sample_id)
            .where(is_current())
            .order_by(Label.sample_id)
        )
        with self.db.session() as session:
            rows = session.execute(query).all()
        return pa.Table.from_pylist(
            [
                {
                    "sample_id": lab.sample_id,
                    "blob_uri": blob_uri,
                    "split": split,
                    "label": lab.label,
                    "source": lab.source,
                    "confidence": float(lab.confidence),
                    "method": lab.method,
                    "cycle_id": lab.cycle_id,
                    "annotator": lab.annotator,
                    "label_id": lab.id,
                    "created_at": lab.created_at,
                    **provenance(lab.source, lab.label, lab.evidence),
                }
                for lab, blob_uri, split in rows
            ],
            schema=MANIFEST_SCHEMA,
        )

    def snapshot(self, message: str | None = None) -> tuple[VersionInfo, bool]:
        """Freeze the current labels. Returns (version, created); unchanged labels give the
        existing version and ``created=False``."""
        table = self.current_labels()
        if table.num_rows == 0:
            raise InvalidInputError("nothing to snapshot: no labeled samples yet")
        version_id = content_id(table)
        with self.db.session() as session:
            existing = session.get(DatasetVersion, version_id)
            if existing is not None:
                return VersionInfo.from_row(existing), False
            parent = session.scalars(
                select(DatasetVersion.id).order_by(DatasetVersion.created_at.desc()).limit(1)
            ).first()
        table = table.replace_schema_metadata(
            {
                "flywheel.version_id": version_id,
                "flywheel.parent_id": parent or "",
                SCHEMA_KEY.decode(): str(MANIFEST_SCHEMA_VERSION),
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        path = self._manifest_path(version_id)
        if not storage.write_once(self._loc.fs, path, data):
            # Published earlier by a run whose DB insert did not happen: keep those bytes.
            data = storage.read_bytes(self._loc.fs, path)
        row = DatasetVersion(
            id=version_id,
            parent_id=parent,
            manifest_uri=self._loc.uri(path),
            checksum=sha256_hex(data),
            num_rows=table.num_rows,
            stats=version_stats(table),
            message=message,
        )
        try:
            with self.db.session() as session:
                session.add(row)
        except DBIntegrityError:  # a concurrent snapshot of the same labels won the race
            return self.resolve(version_id), False
        return VersionInfo.from_row(row), True

    # --- reading -----------------------------------------------------------------
    def list(self) -> list[VersionInfo]:
        with self.db.session() as session:
            rows = session.scalars(select(DatasetVersion).order_by(DatasetVersion.created_at))
            return [VersionInfo.from_row(r) for r in rows]

    def resolve(self, ref: str) -> VersionInfo:
        """``latest``, a full id, or a unique id prefix (at least 4 characters)."""
        with self.db.session() as session:
            if ref == "latest":
                row = session.scalars(
                    select(DatasetVersion).order_by(DatasetVersion.created_at.desc()).limit(1)
                ).first()
                if row is None:
                    raise NotFoundError("no dataset versions yet: run `flywheel data snapshot`")
                return VersionInfo.from_row(row)
            if len(ref) < 4:
                raise InvalidInputError(f"version id prefix {ref!r} is too short (4+ chars)")
            rows = session.scalars(
                select(DatasetVersion).where(DatasetVersion.id.startswith(ref)).limit(2)
            ).all()
        if not rows:
            raise NotFoundError(f"no dataset version {ref!r}")
        if len(rows) > 1:
            raise InvalidInputError(f"version prefix {ref!r} is ambiguous")
        return VersionInfo.from_row(rows[0])

    def read(self, ref: str) -> tuple[VersionInfo, pa.Table]:
        """The version's manifest, after checking the file against its recorded checksum."""
        info = self.resolve(ref)
        path = self._manifest_path(info.id)
        try:
            data = storage.read_bytes(self._loc.fs, path)
        except NotFoundError:
            raise IntegrityError(f"manifest of version {info.id[:12]} is missing") from None
        if sha256_hex(data) != info.checksum:
            raise IntegrityError(
                f"manifest of version {info.id[:12]} fails its checksum: "
                "the file was modified after publishing; refusing to use it"
            )
        return info, upgrade(pq.read_table(pa.BufferReader(data)), MANIFEST_SCHEMA)

    def diff(self, a: str, b: str) -> VersionDiff:
        info_a, ta = self.read(a)
        info_b, tb = self.read(b)
        keep = ["sample_id", "label", "source", "confidence", "method"]
        joined = ta.select(keep).join(
            tb.select(keep), "sample_id", join_type="inner", left_suffix="_a", right_suffix="_b"
        )
        relabeled_mask = pc.not_equal(joined["label_a"], joined["label_b"])
        same_label = pc.invert(relabeled_mask)
        provenance_changed = pc.or_(
            pc.or_(
                pc.not_equal(joined["source_a"], joined["source_b"]),
                pc.not_equal(joined["confidence_a"], joined["confidence_b"]),
            ),
            pc.not_equal(joined["method_a"], joined["method_b"]),
        )
        in_a = pc.is_in(tb["sample_id"], value_set=ta["sample_id"])
        in_b = pc.is_in(ta["sample_id"], value_set=tb["sample_id"])
        order = [("sample_id", "ascending")]
        return VersionDiff(
            a=info_a.id,
            b=info_b.id,
            added=tb.filter(pc.invert(in_a)),
            removed=ta.filter(pc.invert(in_b)),
            relabeled=joined.filter(relabeled_mask).sort_by(order),
            reattributed=joined.filter(pc.and_(same_label, provenance_changed)).sort_by(order),
        )

    def export(self, ref: str, dest: Path, fmt: Literal["parquet", "csv"]) -> Path:
        _, table = self.read(ref)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            pq.write_table(table, dest)
        elif fmt == "csv":
            pacsv.write_csv(table, dest)
        else:
            raise InvalidInputError(f"unknown export format {fmt!r} (parquet or csv)")
        return dest
