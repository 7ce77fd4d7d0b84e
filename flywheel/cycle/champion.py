"""Moving the champion by hand (an engineer's rollback or promotion) moves its data with it.

A model was trained on one dataset version (its ``dataset_version`` tag). Making it the
champion again makes that version's derived labels current again: pseudo-labels accepted
after it are retracted (reason ``rollback`` or ``promote``, and the version moved from),
and its own pseudo-labels that later cycles replaced or retracted are written back. Labels
made by people (seed, human, feedback) are never touched: where a person has labeled one of
its pseudo-labeled samples since, the person's label stays. So with no human label added
since, ``data snapshot`` gives the champion's own version id.

The project's cycle lease is held throughout: no cycle writes labels meanwhile, and a
running cycle makes the move a ``ConflictError``. The labels commit in one transaction; if
that fails, the champion alias is moved back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select

from flywheel.cycle.guard import exclusive_cycles
from flywheel.db import Label, Sample
from flywheel.db.labels import current_labels_query
from flywheel.db.models import LabelSource
from flywheel.db.session import in_batches
from flywheel.learn.registry import DATASET_VERSION_TAG, ModelRegistry, ModelVersion
from flywheel.workspace import Workspace

PSEUDO = LabelSource.PSEUDO.value
# What a restored label must equal for the version's id to come back (the content columns
# of a manifest row, less the sample's split, which labels do not change).
RESTORED_FIELDS = ("label", "confidence", "method", "cycle_id")


@dataclass(frozen=True)
class LabelRestore:
    """What making ``version``'s labels current again changed."""

    version: str  # the dataset version whose derived labels are current again
    moved_from: str | None  # the dataset version of the champion before the move
    retracted: int  # pseudo-labels withdrawn: accepted after ``version``
    restored: int  # ``version``'s pseudo-labels written back
    kept_human: int  # ``version``'s pseudo-labeled samples a person has labeled since

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChampionMove:
    model: ModelVersion  # the champion now
    labels: LabelRestore | None  # None: the model records no dataset version


def rollback_champion(ws: Workspace, registry: ModelRegistry, holder: str) -> ChampionMove:
    """The previous champion again, with the labels it was trained on."""
    with exclusive_cycles(ws.db, holder):
        before = registry.champion()
        restored = registry.rollback()
        return _with_labels(ws, registry, restored, before, "rollback")


def promote_champion(
    ws: Workspace, registry: ModelRegistry, ref: str, holder: str, reason: str = "manual"
) -> ChampionMove:
    """Model ``ref`` as the champion, with the labels it was trained on."""
    with exclusive_cycles(ws.db, holder):
        before = registry.champion()
        promoted = registry.promote(ref, reason)
        return _with_labels(ws, registry, promoted, before, "promote")


def _with_labels(
    ws: Workspace,
    registry: ModelRegistry,
    now: ModelVersion,
    before: ModelVersion | None,
    reason: str,
) -> ChampionMove:
    version = now.tags.get(DATASET_VERSION_TAG)
    if version is None:
        return ChampionMove(now, None)
    moved_from = before.tags.get(DATASET_VERSION_TAG) if before is not None else None
    try:
        labels = restore_labels(ws, version, reason, moved_from)
    except BaseException:
        if before is not None:  # the model without its data would be half a move
            registry.promote(before.version, f"undo {reason}: its labels were not restored")
        raise
    return ChampionMove(now, labels)


def restore_labels(
    ws: Workspace, version_id: str, reason: str, moved_from: str | None = None
) -> LabelRestore:
    """Make the pseudo-labels of dataset version ``version_id`` the current ones (see the
    module's doc); human-made labels are left as they are."""
    _, manifest = ws.versions.read(version_id)
    wanted = {row["sample_id"]: row for row in manifest.to_pylist() if row["source"] == PSEUDO}
    why = {"reason": reason, "version": version_id, "moved_from": moved_from}
    rows: list[Label] = []
    retracted = kept_human = 0
    with ws.db.session() as s:
        ws.db.lock_for_write(s, "labels")
        current = {lab.sample_id: lab for lab in s.scalars(current_labels_query())}
        for sid, lab in current.items():
            if lab.source == PSEUDO and sid not in wanted:
                rows.append(_retraction(lab, why))
                retracted += 1
        known = set(s.scalars(select(Sample.id)))
        back = []
        for sid, row in wanted.items():
            lab = current.get(sid)
            if sid not in known:
                continue  # the sample is gone from the project: nothing to label
            if lab is not None and lab.source != PSEUDO:
                kept_human += 1  # a person's label since: it stays
            elif lab is None or any(getattr(lab, f) != row[f] for f in RESTORED_FIELDS):
                back.append((row, lab))
        # The evidence a restored label had (its scores and neighbours) comes back with it.
        evidence: dict[int, Any] = {}
        for batch in in_batches([row["label_id"] for row, _ in back]):
            found = s.execute(select(Label.id, Label.evidence).where(Label.id.in_(batch)))
            evidence.update((i, e) for i, e in found)
        for row, lab in back:
            rows.append(_restored(row, lab, evidence.get(row["label_id"]), why))
        restored = len(back)
        s.add_all(rows)
    return LabelRestore(version_id, moved_from, retracted, restored, kept_human)


def _retraction(lab: Label, why: dict[str, Any]) -> Label:
    return Label(
        sample_id=lab.sample_id,
        label=lab.label,
        source=PSEUDO,
        confidence=0.0,
        method=lab.method,
        cycle_id=lab.cycle_id,
        supersedes_id=lab.id,
        evidence={"retracted_by": why},
        retracted=True,
    )


def _restored(
    row: dict[str, Any], lab: Label | None, evidence: dict | None, why: dict[str, Any]
) -> Label:
    return Label(
        sample_id=row["sample_id"],
        label=row["label"],
        source=PSEUDO,
        confidence=row["confidence"],
        method=row["method"],
        cycle_id=row["cycle_id"],
        annotator=row["annotator"],
        supersedes_id=lab.id if lab is not None else None,
        evidence={**(evidence or {}), "restored_by": {**why, "label_id": row["label_id"]}},
    )
