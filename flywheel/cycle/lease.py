"""A lease in the database: one cycle at a time per project, even across worker processes.

A lease is a named lock with an expiry. Its holder renews it (a heartbeat) while it works;
if the holder dies, the lease expires and another worker may take it over, so a crashed
worker never blocks cycles forever. A holder whose :func:`renew` returns ``False`` has lost
the lease and must stop its work.

Every change is one conditional statement, so two processes racing can never both win:
taking an existing row is ``UPDATE ... WHERE name = :n AND (expires_at <= :now OR holder =
:h)`` and checking the row count (PostgreSQL re-checks the condition after waiting for a
concurrent update's lock; SQLite has one writer at a time); creating the row is an INSERT
that the primary key lets only one racer win.

Lease validity is judged by the database row and the ``now`` the callers pass (default: this
machine's clock), so hosts must keep their clocks roughly in sync (NTP) and ``ttl_s`` must be
well above the expected skew and the heartbeat interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flywheel.db.models import CycleLease, aware_utc
from flywheel.db.session import Database

DEFAULT_NAME = "cycle"


@dataclass(frozen=True)
class Lease:
    """A lease as held: ``holder`` owns ``name`` until ``expires_at`` unless it renews."""

    name: str
    holder: str
    cycle_id: int | None
    acquired_at: datetime
    expires_at: datetime

    @classmethod
    def _from_row(cls, row: CycleLease) -> Lease:
        return cls(row.name, row.holder, row.cycle_id, row.acquired_at, row.expires_at)


def acquire(
    db: Database,
    holder: str,
    ttl_s: float,
    cycle_id: int | None = None,
    now: datetime | None = None,
    name: str = DEFAULT_NAME,
) -> Lease | None:
    """Take lease ``name`` for ``holder`` for ``ttl_s`` seconds; ``None`` if another holds it.

    Succeeds when nobody holds the lease, when its holder let it expire (``expires_at <=
    now``), or when ``holder`` already holds it (then it is re-taken: new ``cycle_id``,
    ``acquired_at`` and expiry). Atomic: of any number of concurrent callers with distinct
    holders, at most one gets a lease.
    """
    now = aware_utc(now)
    expires_at = now + timedelta(seconds=_positive(ttl_s))
    lease = Lease(name, holder, cycle_id, now, expires_at)
    # Usually the row exists (a lease left to expire, or ours): try the conditional UPDATE.
    if _take_existing(db, lease):
        return lease
    try:
        with db.session() as session:
            session.add(
                CycleLease(
                    name=name,
                    holder=holder,
                    cycle_id=cycle_id,
                    acquired_at=now,
                    expires_at=expires_at,
                )
            )
        return lease
    except IntegrityError:
        # Another process created the row between our UPDATE and INSERT; it may still have
        # been by an expired holder or by us, so the conditional UPDATE decides.
        return lease if _take_existing(db, lease) else None


def renew(
    db: Database,
    holder: str,
    ttl_s: float,
    now: datetime | None = None,
    name: str = DEFAULT_NAME,
) -> bool:
    """Extend ``holder``'s lease to ``now + ttl_s``; ``False`` if ``holder`` has lost it.

    Lost means released, or taken over by another holder after it expired. A lease that
    expired but that nobody took yet is still renewed: no one else can have started work.
    """
    now = aware_utc(now)
    expires_at = now + timedelta(seconds=_positive(ttl_s))
    with db.session() as session:
        result = session.execute(
            update(CycleLease)
            .where(CycleLease.name == name, CycleLease.holder == holder)
            .values(expires_at=expires_at)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def hand_over(
    db: Database,
    holder: str,
    new_holder: str,
    ttl_s: float,
    cycle_id: int | None = None,
    now: datetime | None = None,
    name: str = DEFAULT_NAME,
    session: Session | None = None,
) -> bool:
    """Pass ``holder``'s lease to ``new_holder`` (e.g. from a request to the cycle it made);
    ``False`` (and no change) if ``holder`` does not hold it. With ``session`` the change
    joins that open transaction and commits (or rolls back) with the caller's rows."""
    now = aware_utc(now)
    statement = (
        update(CycleLease)
        .where(CycleLease.name == name, CycleLease.holder == holder)
        .values(
            holder=new_holder,
            cycle_id=cycle_id,
            expires_at=now + timedelta(seconds=_positive(ttl_s)),
        )
        .execution_options(synchronize_session=False)
    )
    if session is not None:
        return session.execute(statement).rowcount == 1  # type: ignore[attr-defined]
    with db.session() as own:
        return own.execute(statement).rowcount == 1  # type: ignore[attr-defined]


def release(db: Database, holder: str, name: str = DEFAULT_NAME) -> bool:
    """Give up ``holder``'s lease; ``False`` (and no change) if ``holder`` does not hold it."""
    with db.session() as session:
        result = session.execute(
            delete(CycleLease)
            .where(CycleLease.name == name, CycleLease.holder == holder)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def current(db: Database, now: datetime | None = None, name: str = DEFAULT_NAME) -> Lease | None:
    """The lease ``name`` if someone holds it and it has not expired at ``now``, else ``None``."""
    now = aware_utc(now)
    with db.session() as session:
        row = session.scalar(
            select(CycleLease).where(CycleLease.name == name, CycleLease.expires_at > now)
        )
        return Lease._from_row(row) if row is not None else None


def _take_existing(db: Database, lease: Lease) -> bool:
    """The conditional UPDATE: take the row if it expired or is already ``lease.holder``'s."""
    with db.session() as session:
        result = session.execute(
            update(CycleLease)
            .where(
                CycleLease.name == lease.name,
                or_(CycleLease.expires_at <= lease.acquired_at, CycleLease.holder == lease.holder),
            )
            .values(
                holder=lease.holder,
                cycle_id=lease.cycle_id,
                acquired_at=lease.acquired_at,
                expires_at=lease.expires_at,
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


def _positive(ttl_s: float) -> float:
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
    return float(ttl_s)
