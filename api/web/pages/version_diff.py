"""The diff page of two dataset versions: counts per kind of change, the library's summary
folded to one row per (change, source), and the first samples of each kind of change.

Versions never change, so a diff is computed once per pair and kept (a few pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from api.context import ApiContext
from api.schemas_engineer import DiffCounts
from api.web.state import WebState
from flywheel.datasets.versions import VersionInfo

DIFF_EXAMPLES = 24
CHANGES = ("relabeled", "reattributed", "added", "removed")  # the order the page lists them


@dataclass(frozen=True)
class DiffRow:
    sample_id: str
    before: str | None
    after: str | None
    source_before: str | None
    source_after: str | None


@dataclass(frozen=True)
class DiffGroup:
    """One kind of change from one source, with its count per label (largest first)."""

    change: str
    source: str
    total: int
    by_label: list[tuple[str, int]]


@dataclass(frozen=True)
class DiffView:
    a: VersionInfo
    b: VersionInfo
    counts: dict[str, int]
    groups: list[DiffGroup]
    examples: dict[str, list[DiffRow]]


def group_summary(summary: list[dict[str, Any]]) -> list[DiffGroup]:
    """The library's per (change, label, source) rows folded into one row per (change,
    source): a page-sized table whatever the number of classes."""
    grouped: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for row in summary:
        grouped.setdefault((row["change"], row["source"]), []).append((row["label"], row["count"]))
    return [
        DiffGroup(change, source, sum(n for _, n in labels), labels)
        for (change, source), labels in grouped.items()
    ]


def examples(table: pa.Table, change: str) -> list[DiffRow]:
    """The first ``DIFF_EXAMPLES`` rows of one kind of change, as before/after pairs."""
    out = []
    for r in table.slice(0, DIFF_EXAMPLES).to_pylist():
        if change == "added":
            out.append(DiffRow(r["sample_id"], None, r["label"], None, r["source"]))
        elif change == "removed":
            out.append(DiffRow(r["sample_id"], r["label"], None, r["source"], None))
        else:
            pair = (r["label_a"], r["label_b"], r["source_a"], r["source_b"])
            out.append(DiffRow(r["sample_id"], *pair))
    return out


def version_diff(ctx: ApiContext, web: WebState, a: str, b: str) -> DiffView:
    """Versions ``a`` to ``b`` (ids, unique prefixes or ``latest``), cached by their ids."""
    versions = ctx.ws.versions
    info_a, info_b = versions.resolve(a), versions.resolve(b)
    key = (info_a.id, info_b.id)
    cached = web.diffs.get(key)
    if cached is not None:
        return cached
    d = versions.diff(info_a.id, info_b.id)
    view = DiffView(
        a=info_a,
        b=info_b,
        counts=DiffCounts.model_validate(d, from_attributes=True).model_dump(),
        groups=group_summary(d.summary()),
        examples={change: examples(getattr(d, change), change) for change in CHANGES},
    )
    web.diffs.put(key, view)
    return view
