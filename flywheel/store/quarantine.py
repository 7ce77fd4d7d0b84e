"""Samples a cycle could not use (vanished blob, checksum mismatch, undecodable bytes).

A cycle that meets such a sample records it here with the reason and goes on without it;
later cycles skip it (``quarantined_ids``) until an engineer releases it, after which the
next cycle tries it again (and quarantines it again if it is still unusable).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.sql import Select

from flywheel.db import Database, Quarantine
from flywheel.db.session import in_batches
from flywheel.errors import NotFoundError


@dataclass(frozen=True)
class QuarantinedSample:
    sample_id: str
    reason: str
    cycle_id: int | None
    created_at: datetime


def quarantined_ids() -> Select:
    """``SELECT sample_id FROM quarantine``: for ``Sample.id.not_in(...)`` in cycle queries."""
    return select(Quarantine.sample_id)


def quarantined_among(db: Database, sample_ids: list[str]) -> set[str]:
    """Those of ``sample_ids`` that are quarantined."""
    found: set[str] = set()
    with db.session() as s:
        for batch in in_batches(sample_ids):
            found.update(s.scalars(quarantined_ids().where(Quarantine.sample_id.in_(batch))))
    return found


def record(db: Database, reasons: dict[str, str], cycle_id: int | None) -> int:
    """Quarantine each ``sample id -> reason``; returns how many were new.

    A sample already quarantined keeps its first reason and cycle: that is when it broke.
    """
    if not reasons:
        return 0
    with db.session() as s:
        known = set(
            s.scalars(select(Quarantine.sample_id).where(Quarantine.sample_id.in_(reasons)))
        )
        new = [
            Quarantine(sample_id=sid, reason=reason, cycle_id=cycle_id)
            for sid, reason in sorted(reasons.items())
            if sid not in known
        ]
        s.add_all(new)
    return len(new)


def list_quarantine(
    db: Database, limit: int = 50, offset: int = 0
) -> tuple[list[QuarantinedSample], int]:
    """A page of quarantined samples, newest first, and how many there are in all."""
    with db.session() as s:
        total = int(s.scalar(select(func.count()).select_from(Quarantine)) or 0)
        rows = s.scalars(
            select(Quarantine)
            .order_by(Quarantine.created_at.desc(), Quarantine.sample_id)
            .limit(limit)
            .offset(offset)
        )
        items = [QuarantinedSample(r.sample_id, r.reason, r.cycle_id, r.created_at) for r in rows]
    return items, total


def release(db: Database, sample_id: str) -> QuarantinedSample:
    """Put a sample back: the next cycle uses it again. NotFoundError if not quarantined."""
    with db.session() as s:
        row = s.get(Quarantine, sample_id)
        if row is None:
            raise NotFoundError(f"sample {sample_id} is not in quarantine")
        released = QuarantinedSample(row.sample_id, row.reason, row.cycle_id, row.created_at)
        s.delete(row)
    return released
