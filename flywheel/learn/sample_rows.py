"""The cycle's samples read from the database in one narrow, streamed query.

A pool of a million samples must not become a million ORM objects: a current pseudo-label
row carries its JSON evidence, and a row object per sample costs kilobytes. The query
returns only the columns a cycle needs (id, split, size, current label, hidden truth), a
batch at a time. Human-labeled and test samples (few) are kept as Python values; pool
samples add their id to one bytes array (``SampleIds``) and their labels to typed arrays.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.sql import Select

from flywheel.db import Database, GroundTruth, Label, Sample
from flywheel.db.labels import HUMAN_MADE_SOURCES, is_current
from flywheel.db.models import Split
from flywheel.store import quarantine
from flywheel.store.id_index import IdIndex, SampleIds, as_keys

SCAN_BATCH = 20_000  # rows fetched from the database at a time
NO_LABEL = -1


@dataclass
class PoolLabels:
    """The pool's current pseudo-labels, aligned with ``CycleData.pool_ids``."""

    names: list[str]  # what ``code`` indexes: the cycle's classes, then any other named
    code: np.ndarray  # int32 (n_pool,): index into ``names``; NO_LABEL where there is none
    confidence: np.ndarray  # float32 (n_pool,)

    @classmethod
    def of(
        cls, pool_ids: Sequence[str], current: Mapping[str, tuple[str, float]], classes: list[str]
    ) -> PoolLabels:
        """From ``{sample id: (label, confidence)}`` (tests and small callers)."""
        names = list(classes) + sorted({lab for lab, _ in current.values()} - set(classes))
        index = {name: i for i, name in enumerate(names)}
        got = [current.get(sid) for sid in pool_ids]
        code = [NO_LABEL if g is None else index[g[0]] for g in got]
        conf = [0.0 if g is None else g[1] for g in got]
        return cls(names, np.array(code, np.int32), np.array(conf, np.float32))

    def at(self, i: int) -> tuple[str, float] | None:
        """Pool sample ``i``'s current pseudo-label and its confidence, if it has one."""
        code = int(self.code[i])
        return None if code == NO_LABEL else (self.names[code], float(self.confidence[i]))

    def in_classes(self, num_classes: int) -> np.ndarray:
        """bool (n_pool,): the sample's pseudo-label names one of the cycle's classes."""
        return (self.code >= 0) & (self.code < num_classes)


@dataclass
class SampleRows:
    """What the query found, before any image is read."""

    human: dict[str, str] = field(default_factory=dict)  # sample -> its human-made label
    groups: dict[str, list[str]] = field(default_factory=lambda: {"labeled": [], "test": []})
    pool: SampleIds = field(default_factory=SampleIds)  # bytes: a million are 64 MB, not 121
    dims: Counter[tuple[int, int]] = field(default_factory=Counter)  # (width, height) counts
    # Pool labels as codes into ``names`` (pseudo-label names and truth share one table).
    names: dict[str, int] = field(default_factory=dict)
    pool_label: array = field(default_factory=lambda: array("i"))
    pool_confidence: array = field(default_factory=lambda: array("f"))
    pool_truth: array = field(default_factory=lambda: array("i"))

    def code(self, name: str | None) -> int:
        if name is None:
            return NO_LABEL
        return self.names.setdefault(name, len(self.names))

    def drop(self, failed: Mapping[str, str]) -> None:
        """Leave out samples found unusable (only human-labeled ones are read here)."""
        for group in ("labeled", "test"):
            self.groups[group] = [sid for sid in self.groups[group] if sid not in failed]
        for sid in failed:
            self.human.pop(sid, None)

    def pool_labels(self, classes: list[str]) -> tuple[PoolLabels, np.ndarray]:
        """The pool's pseudo-labels and its hidden truth (int64 class index, -1: unknown),
        with codes remapped so that the cycle's classes come first."""
        others = sorted(set(self.names) - set(classes))
        names = list(classes) + others
        new = np.array([names.index(n) for n in self.names], dtype=np.int32)
        remap = np.append(new, NO_LABEL)  # index -1 (no label) stays -1
        labels = remap[np.frombuffer(self.pool_label, dtype=np.int32)]
        truth = remap[np.frombuffer(self.pool_truth, dtype=np.int32)].astype(np.int64)
        truth[truth >= len(classes)] = -1  # truth of a class not learned cannot be scored
        confidence = np.frombuffer(self.pool_confidence, dtype=np.float32).copy()
        return PoolLabels(names, labels, confidence), truth


def _narrow_query() -> Select:
    current = (
        select(Label.sample_id, Label.label, Label.confidence, Label.source)
        .where(is_current())
        .subquery()
    )
    return (
        select(
            Sample.id,
            Sample.split,
            Sample.width,
            Sample.height,
            current.c.label,
            current.c.confidence,
            current.c.source,
            GroundTruth.label,
        )
        .outerjoin(current, current.c.sample_id == Sample.id)
        .outerjoin(GroundTruth, GroundTruth.sample_id == Sample.id)
        .where(Sample.id.not_in(quarantine.quarantined_ids()))
        .order_by(Sample.id)
        .execution_options(yield_per=SCAN_BATCH)
    )


def scan_samples(db: Database, planned_pool: IdIndex | None = None) -> SampleRows:
    """Every usable sample, grouped: human-labeled outside the test split ("labeled"),
    labeled test samples ("test") and the rest ("pool"), in id order.

    ``planned_pool``: the pool an earlier step planned; a pool sample outside
    it arrived after the plan and is left to the next cycle."""
    rows = SampleRows()
    pool_parts = []  # each batch's pool ids as bytes: no million Python strings at the end
    with db.session() as s:
        for batch in s.execute(_narrow_query()).partitions():
            pool = []
            for row in batch:
                sid, split, width, height, label, _, source, _ = row
                human = label is not None and source in HUMAN_MADE_SOURCES
                if human:
                    rows.human[sid] = label
                    rows.groups["test" if split == Split.TEST else "labeled"].append(sid)
                    rows.dims[(width, height)] += 1
                elif split != Split.TEST:  # an unlabeled test sample is not used
                    pool.append(row)
            if planned_pool is not None:  # arrived after the pool was planned: the next cycle's
                keep = planned_pool.contains([row[0] for row in pool])
                pool = [row for row, k in zip(pool, keep, strict=True) if k]
            pool_parts.append(as_keys([row[0] for row in pool]))
            for _, _, width, height, label, confidence, _, truth in pool:
                rows.dims[(width, height)] += 1
                rows.pool_label.append(rows.code(label))
                rows.pool_confidence.append(0.0 if label is None else float(confidence))
                rows.pool_truth.append(rows.code(truth))
    if pool_parts:
        rows.pool = SampleIds(np.concatenate(pool_parts))
    return rows
