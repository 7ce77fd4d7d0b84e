"""One cycle at a time per project, across processes (API, CLI, workers).

``exclusive_cycles`` holds the database lease (:mod:`flywheel.cycle.lease`) while cycles
run and renews it from a heartbeat thread. If the holder dies, the lease expires and the
next runner takes over. Cycles the dead holder left in a running state can no longer
finish, so they are marked failed with the reason instead of staying "training" forever.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update

from flywheel.cycle.lease import Lease, acquire, current, release, renew
from flywheel.cycle.state import FINISHED
from flywheel.db import Cycle, Database
from flywheel.db.models import CycleState, utcnow
from flywheel.errors import ConflictError

# A dead holder blocks cycles for at most LEASE_TTL_S; a live one renews every HEARTBEAT_S.
LEASE_TTL_S = 120.0
HEARTBEAT_S = 20.0


def holder_id(role: str) -> str:
    """A holder name that says who holds the lease: role, host, process, and a nonce."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def fail_interrupted_cycles(db: Database) -> list[int]:
    """Mark every unfinished cycle failed; call only while holding the lease (no one else
    can be running one). Returns their ids."""
    with db.session() as s:
        ids = list(s.scalars(select(Cycle.id).where(Cycle.state.not_in(FINISHED))))
        if ids:
            s.execute(
                update(Cycle)
                .where(Cycle.id.in_(ids))
                .values(
                    state=CycleState.FAILED.value,
                    error="interrupted: the process running it stopped before it finished",
                    updated_at=utcnow(),
                )
            )
    return ids


def busy_message(db: Database) -> str:
    lease = current(db)
    with db.session() as s:
        running = s.scalar(
            select(Cycle.id).where(Cycle.state.not_in(FINISHED)).order_by(Cycle.id.desc())
        )
    who = f" by {lease.holder}" if lease else ""
    which = f"cycle {running} is running" if running else "a cycle is starting"
    return f"{which}{who}: one cycle at a time"


@contextmanager
def keep_alive(
    db: Database, leases: list[tuple[str, str]], ttl_s: float, heartbeat_s: float
) -> Iterator[None]:
    """Renew each (name, holder) lease every ``heartbeat_s`` while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            for name, holder in leases:
                try:
                    # False means lost (e.g. this process stalled past the TTL): the next
                    # claim by its holder notices; nothing to renew here.
                    renew(db, holder, ttl_s, name=name)
                except Exception:  # a database blip: try again at the next beat
                    continue

    thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def exclusive_cycles(
    db: Database,
    holder: str,
    ttl_s: float = LEASE_TTL_S,
    heartbeat_s: float = HEARTBEAT_S,
) -> Iterator[Lease]:
    """Hold the cycle lease for the ``with`` block; ConflictError if another holds it."""
    lease = acquire(db, holder, ttl_s)
    if lease is None:
        raise ConflictError(busy_message(db))
    try:
        fail_interrupted_cycles(db)
        with keep_alive(db, [(lease.name, holder)], ttl_s, heartbeat_s):
            yield lease
    finally:
        release(db, holder)
