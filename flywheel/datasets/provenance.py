"""What made each label, as plain columns of a dataset version's manifest (schema 2).

The database keeps a label's evidence as JSON (``labels.evidence``); a manifest carries the
part a reader needs without the database, one typed column each, null where it does not
apply:

- a pseudo-label: ``model_version`` (whose probabilities scored it), ``embedding`` (the
  embedding store key of the vectors it was selected with), ``threshold`` (its class's),
  ``agreement`` (the share of its labeled neighbours' weight on its class) and ``score``;
- a feedback label: ``votes`` (how many users' answers) and ``posterior`` (the consensus
  probability of its class);
- a reviewer's label: the reviewer is the row's ``annotator``.

These columns describe a label; they are not part of what a version *is*, so its id does
not depend on them. Manifests of schema 1 (before these columns) read as schema 2 with the
columns null.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from flywheel.db.models import LabelSource

MANIFEST_SCHEMA_VERSION = 2
SCHEMA_KEY = b"flywheel.manifest_schema"
PROVENANCE_FIELDS = [
    ("model_version", pa.string()),
    ("embedding", pa.string()),
    ("threshold", pa.float64()),
    ("agreement", pa.float64()),
    ("score", pa.float64()),
    ("votes", pa.int64()),
    ("posterior", pa.float64()),
]
PROVENANCE_COLUMNS = tuple(name for name, _ in PROVENANCE_FIELDS)


def provenance(source: str, label: str, evidence: dict[str, Any] | None) -> dict[str, Any]:
    """The provenance columns of one label row, from its source and evidence."""
    out: dict[str, Any] = dict.fromkeys(PROVENANCE_COLUMNS)
    ev = evidence or {}
    if source == LabelSource.PSEUDO.value:
        out["model_version"] = _text(ev.get("model_version"))
        out["embedding"] = _text(ev.get("embedding_fingerprint"))
        out["threshold"] = _number(ev.get("threshold"))
        out["agreement"] = _number(ev.get("knn_share"))
        out["score"] = _number(ev.get("score"))
    elif source == LabelSource.FEEDBACK.value:
        votes = ev.get("votes")
        out["votes"] = len(votes) if isinstance(votes, list) else None
        posterior = ev.get("posterior")
        out["posterior"] = _number(posterior.get(label)) if isinstance(posterior, dict) else None
    return out


def manifest_schema_version(table: pa.Table) -> int:
    """The schema a manifest was written with (1: written before it was recorded)."""
    meta = table.schema.metadata or {}
    return int(meta.get(SCHEMA_KEY, b"1"))


def upgrade(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An older manifest in the current ``schema``: missing provenance columns are null."""
    for name, kind in PROVENANCE_FIELDS:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, kind), pa.nulls(table.num_rows, kind))
    return table.select(schema.names).cast(schema).replace_schema_metadata(table.schema.metadata)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None
