"""One cycle at a time across processes, and no cycle stuck "running" after a crash."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.cycle.guard import exclusive_cycles, fail_interrupted_cycles, holder_id
from flywheel.cycle.lease import acquire, current
from flywheel.db import Cycle
from flywheel.errors import ConflictError


def test_second_holder_is_refused_with_the_running_cycle(workspace) -> None:
    with exclusive_cycles(workspace.db, "a"):
        with workspace.db.session() as s:
            s.add(Cycle(state="training"))
        with (
            pytest.raises(ConflictError, match="cycle 1 is running by a"),
            exclusive_cycles(workspace.db, "b"),
        ):
            pass
    assert current(workspace.db) is None  # released on exit
    with exclusive_cycles(workspace.db, "b") as lease:
        assert lease.holder == "b"


def test_a_dead_holders_cycles_are_failed_when_the_lease_is_taken_over(workspace) -> None:
    assert acquire(workspace.db, "crashed", ttl_s=3600) is not None
    with workspace.db.session() as s:
        s.add_all([Cycle(state="embedding"), Cycle(state="promoted")])
    with pytest.raises(ConflictError), exclusive_cycles(workspace.db, "next"):
        pass
    # The crashed holder never renews: its last renewal (an hour ago) has expired.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert acquire(workspace.db, "crashed", ttl_s=60, now=an_hour_ago) is not None
    with exclusive_cycles(workspace.db, "next"), workspace.db.session() as s:
        states = {c.id: (c.state, c.error) for c in s.query(Cycle)}
    assert states[1][0] == "failed" and "interrupted" in states[1][1]
    assert states[2] == ("promoted", None)
    assert fail_interrupted_cycles(workspace.db) == []


def test_heartbeat_keeps_a_long_run_exclusive(workspace) -> None:
    with exclusive_cycles(workspace.db, "long", ttl_s=60, heartbeat_s=0.05) as lease:
        # Renewed: the expiry moves on while the block runs (waited for, not timed).
        deadline = time.monotonic() + 60
        while current(workspace.db).expires_at <= lease.expires_at:
            assert time.monotonic() < deadline, "the heartbeat never renewed the lease"
            time.sleep(0.05)
        assert acquire(workspace.db, "other", ttl_s=1) is None
    assert holder_id("api").startswith("api@")
