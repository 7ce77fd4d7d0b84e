"""The projects bench_ui_pages.py loads pages of: a small one (real digits with a few open
review items, as a cycle would leave them) and the same project grown large: 100,000 pool
samples, 50,000 pseudo-labels and 5,000 open review items, written in bulk through the
library's tables. The grown samples have no blobs: no measured page decodes an image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from sqlalchemy import insert, select

from flywheel.db import Label, ReviewItem, Sample
from flywheel.db.models import ReviewReason
from flywheel.workspace import Workspace

POOL = 100_000
LABELED = 50_000
OPEN_ITEMS = 5_000
BATCH = 10_000  # rows per INSERT: bounded memory and statement size


def open_review_items(ws: Workspace, labels: list[str]) -> None:
    """One open ``uncertain`` review item per label, on the first pool samples (id order),
    with the first three seed-labeled samples as neighbours."""
    with ws.db.session() as s:
        by_id = select(Sample.id).order_by(Sample.id)
        pool = s.scalars(by_id.where(Sample.split == "pool").limit(len(labels))).all()
        seeds = s.scalars(by_id.where(Sample.split == "train").limit(3)).all()
        if len(pool) < len(labels):
            raise ValueError(f"{len(pool)} pool samples for {len(labels)} review items")
        neighbours = [[sid, 0.9 - 0.1 * rank] for rank, sid in enumerate(seeds)]
        evidence = {"classifier_prob": 0.41, "knn_share": 0.6, "threshold": 0.9}
        s.add_all(
            ReviewItem(
                sample_id=sid,
                cycle_id=None,
                reason=ReviewReason.UNCERTAIN.value,
                proposed_label=label,
                score=0.3 + 0.01 * n,
                evidence={**evidence, "neighbors": neighbours},
            )
            for n, (sid, label) in enumerate(zip(pool, labels, strict=True))
        )


def _row_id(n: int) -> str:
    """Sample id ``n`` as 64 hex digits: never the sha256 of a real image."""
    return format(n, "064x")


def _pool_samples() -> Iterator[dict[str, Any]]:
    shape = {"blob_uri": "x", "source": "scale", "split": "pool", "format": "PNG"}
    for n in range(1, POOL + 1):
        yield {"id": _row_id(n), **shape, "width": 8, "height": 8, "size_bytes": 1}


def _pseudo_labels() -> Iterator[dict[str, Any]]:
    """The last LABELED pool samples, labelled by a cycle."""
    for n in range(POOL - LABELED + 1, POOL + 1):
        yield {
            "sample_id": _row_id(n),
            "label": str(n % 10),
            "source": "pseudo",
            "confidence": 0.99,
            "method": "scale",
        }


def _review_items() -> Iterator[dict[str, Any]]:
    """OPEN_ITEMS items on the first pool samples, each with 8 pseudo-labelled neighbours."""
    for n in range(1, OPEN_ITEMS + 1):
        near = [[_row_id(POOL - k - n % 50), 0.9] for k in range(8)]
        yield {
            "sample_id": _row_id(n),
            "reason": ReviewReason.UNCERTAIN.value,
            "proposed_label": str(n % 10),
            "score": (n % 997) / 997,
            "evidence": {"classifier_prob": 0.5, "neighbors": near},
        }


def _batches(rows: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while batch := list(islice(it, BATCH)):
        yield batch


def grow(ws: Workspace) -> None:
    """Add POOL pool samples, LABELED pseudo-labels and OPEN_ITEMS open review items."""
    with ws.db.session() as s:
        for table, rows in (
            (Sample, _pool_samples()),
            (Label, _pseudo_labels()),
            (ReviewItem, _review_items()),
        ):
            for batch in _batches(rows):
                s.execute(insert(table), batch)
