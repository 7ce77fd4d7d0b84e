from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from flywheel.cycle.lease import Lease, acquire, current, release, renew
from flywheel.db.models import utcnow


def test_acquire_and_second_holder_refused(workspace):
    now = utcnow()
    lease = acquire(workspace.db, "worker-a", ttl_s=30, cycle_id=7, now=now)
    assert lease == Lease("cycle", "worker-a", 7, now, now + timedelta(seconds=30))
    assert acquire(workspace.db, "worker-b", ttl_s=30, now=now + timedelta(seconds=1)) is None
    held = current(workspace.db, now=now + timedelta(seconds=1))
    assert held == lease
    assert held.acquired_at.tzinfo is not None


def test_same_holder_reacquires(workspace):
    now = utcnow()
    acquire(workspace.db, "worker-a", ttl_s=30, cycle_id=1, now=now)
    again = acquire(workspace.db, "worker-a", ttl_s=30, cycle_id=2, now=now + timedelta(seconds=5))
    assert again is not None and again.cycle_id == 2
    assert current(workspace.db, now=now + timedelta(seconds=5)).cycle_id == 2


def test_expiry_lets_another_take_over(workspace):
    now = utcnow()
    acquire(workspace.db, "worker-a", ttl_s=10, now=now)
    later = now + timedelta(seconds=10)  # expires_at <= now: expired
    assert current(workspace.db, now=later) is None
    taken = acquire(workspace.db, "worker-b", ttl_s=10, cycle_id=3, now=later)
    assert taken is not None and taken.holder == "worker-b"
    # The old holder's heartbeat now says it lost the lease; it cannot release it either.
    assert not renew(workspace.db, "worker-a", ttl_s=10, now=later)
    assert not release(workspace.db, "worker-a")
    assert current(workspace.db, now=later).holder == "worker-b"


def test_renew_extends_only_for_the_holder(workspace):
    now = utcnow()
    acquire(workspace.db, "worker-a", ttl_s=10, now=now)
    assert renew(workspace.db, "worker-a", ttl_s=10, now=now + timedelta(seconds=8))
    # Without the renewal it would have expired at now + 10.
    held = current(workspace.db, now=now + timedelta(seconds=15))
    assert held is not None and held.expires_at == now + timedelta(seconds=18)
    assert held.acquired_at == now  # renewing is not re-acquiring
    assert not renew(workspace.db, "worker-b", ttl_s=10, now=now + timedelta(seconds=9))
    assert acquire(workspace.db, "worker-b", ttl_s=10, now=now + timedelta(seconds=15)) is None


def test_release_only_by_holder(workspace):
    now = utcnow()
    acquire(workspace.db, "worker-a", ttl_s=30, now=now)
    assert not release(workspace.db, "worker-b")
    assert current(workspace.db, now=now).holder == "worker-a"
    assert release(workspace.db, "worker-a")
    assert current(workspace.db, now=now) is None
    assert not release(workspace.db, "worker-a")  # already released
    assert not renew(workspace.db, "worker-a", ttl_s=30, now=now)
    assert acquire(workspace.db, "worker-b", ttl_s=30, now=now) is not None


def test_names_are_independent(workspace):
    now = utcnow()
    assert acquire(workspace.db, "a", ttl_s=30, now=now, name="cycle") is not None
    assert acquire(workspace.db, "b", ttl_s=30, now=now, name="reindex") is not None
    assert current(workspace.db, now=now, name="reindex").holder == "b"


def test_bad_arguments(workspace):
    with pytest.raises(ValueError):
        acquire(workspace.db, "a", ttl_s=0)
    with pytest.raises(ValueError):
        renew(workspace.db, "a", ttl_s=-1)
    with pytest.raises(ValueError):
        current(workspace.db, now=utcnow().replace(tzinfo=None))


@pytest.mark.parametrize("expired_row", [False, True], ids=["no-row", "expired-row"])
def test_racing_acquirers_exactly_one_wins(workspace, expired_row):
    now = utcnow()
    if expired_row:  # the race then goes through the conditional UPDATE, not the INSERT
        acquire(workspace.db, "dead-worker", ttl_s=1, now=now - timedelta(seconds=60))
    start = threading.Barrier(8)
    results: dict[str, Lease | None] = {}
    errors: list[BaseException] = []

    def race(holder: str) -> None:
        try:
            start.wait()
            results[holder] = acquire(workspace.db, holder, ttl_s=60, now=now)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(f"worker-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    winners = [h for h, lease in results.items() if lease is not None]
    assert len(results) == 8 and len(winners) == 1
    assert current(workspace.db, now=now).holder == winners[0]
