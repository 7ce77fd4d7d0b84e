"""Queued cycles: the request, the leases each step claims, and the feedback trigger.

Real SQLite and PostgreSQL (the ``db_url`` fixture), real threads and real lease expiry.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from flywheel.config import CycleSettings
from flywheel.cycle.lease import acquire, current, hand_over, release, renew
from flywheel.cycle.requests import (
    CYCLE_TOPIC,
    STEP_LEASE,
    CycleGoneError,
    StepBusyError,
    claim_step,
    cycle_holder,
    release_cycle,
    request_cycle,
)
from flywheel.cycle.state import load_cycle, start_cycle, update_cycle
from flywheel.cycle.triggers import feedback_since_last_cycle, feedback_trigger_due
from flywheel.db import Cycle, Feedback, OutboxMessage, Prediction
from flywheel.db.models import utcnow
from flywheel.errors import ConflictError
from flywheel.workspace import Workspace
from tests.conftest import sample_row

CYCLES = CycleSettings(lease_s=30, heartbeat_s=5)


def count(ws: Workspace, model: type) -> int:
    with ws.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def messages(ws: Workspace) -> list[OutboxMessage]:
    with ws.db.session() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


# --- 1. request -----------------------------------------------------------------------------
def test_request_queues_a_cycle_and_hands_it_the_lease(workspace) -> None:
    learning = workspace.settings.learning.model_copy(update={"train_epochs": 7})
    before = utcnow()
    cycle_id = request_cycle(workspace, learning, CYCLES, trigger="schedule")

    cycle = load_cycle(workspace, cycle_id)
    assert cycle.state == "queued" and cycle.trigger == "schedule"
    assert cycle.message == "waiting for a worker"
    assert cycle.params == learning.model_dump() and cycle.outputs == {}
    assert cycle.progress == 0.0 and cycle.error is None
    [msg] = messages(workspace)
    assert msg.topic == CYCLE_TOPIC == "cycle.run"
    assert msg.payload == {"cycle_id": cycle_id}
    assert msg.dedupe_key == f"cycle:{cycle_id}" and msg.sent_at is None
    lease = current(workspace.db)
    assert lease is not None
    assert lease.holder == cycle_holder(cycle_id) == f"cycle:{cycle_id}"
    assert lease.cycle_id == cycle_id
    assert before + timedelta(seconds=29) < lease.expires_at <= utcnow() + timedelta(seconds=30)

    # One cycle at a time: the second request names the queued one, and writes nothing.
    with pytest.raises(ConflictError, match=f"cycle {cycle_id} is running by cycle:{cycle_id}"):
        request_cycle(workspace, learning, CYCLES)
    assert count(workspace, Cycle) == 1 and len(messages(workspace)) == 1
    assert current(workspace.db).holder == f"cycle:{cycle_id}"  # the refused one kept nothing

    release_cycle(workspace, cycle_id)
    assert current(workspace.db) is None
    second = request_cycle(workspace, learning, CYCLES)
    assert second == cycle_id + 1
    assert current(workspace.db).holder == f"cycle:{second}"
    assert [m.payload["cycle_id"] for m in messages(workspace)] == [cycle_id, second]
    assert load_cycle(workspace, second).trigger == "manual"
    # Released while still queued means its runner gave up: the next request fails it.
    first = load_cycle(workspace, cycle_id)
    assert first.state == "failed" and "interrupted" in first.error


def test_release_cycle_only_releases_its_own_lease(workspace) -> None:
    cycle_id = request_cycle(workspace, workspace.settings.learning, CYCLES)
    release_cycle(workspace, cycle_id + 1)  # a late finish of another cycle
    assert current(workspace.db).holder == f"cycle:{cycle_id}"


# --- 2. concurrent requests -----------------------------------------------------------------
def test_concurrent_requests_exactly_one_wins(workspace) -> None:
    racers = 8
    start = threading.Barrier(racers)
    won: list[int] = []
    refused: list[ConflictError] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race() -> None:
        try:
            start.wait()
            cycle_id = request_cycle(workspace, workspace.settings.learning, CYCLES)
            with lock:
                won.append(cycle_id)
        except ConflictError as exc:
            with lock:
                refused.append(exc)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(won) == 1 and len(refused) == racers - 1
    assert all("one cycle at a time" in str(e) for e in refused)
    assert count(workspace, Cycle) == 1
    [msg] = messages(workspace)
    assert msg.payload == {"cycle_id": won[0]}
    assert current(workspace.db).holder == f"cycle:{won[0]}"
    assert load_cycle(workspace, won[0]).state == "queued"


# --- 3. an expired lease ----------------------------------------------------------------------
def test_request_after_the_lease_expired_fails_the_interrupted_cycle(workspace) -> None:
    short = CycleSettings(lease_s=30, heartbeat_s=0.1)
    with workspace.db.session() as s:
        s.add(Cycle(state="promoted", params={}, outputs={}))  # an old, finished one
    old = request_cycle(workspace, workspace.settings.learning, short)
    update_cycle(workspace, old, state="training", step="training")  # its worker then died
    with pytest.raises(ConflictError, match=f"cycle {old} is running"):
        request_cycle(workspace, workspace.settings.learning, short)
    # Nobody renews it: its last renewal, an hour ago, has expired.
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert acquire(workspace.db, f"cycle:{old}", ttl_s=30, now=an_hour_ago) is not None
    assert current(workspace.db) is None

    new = request_cycle(workspace, workspace.settings.learning, short)
    assert new == old + 1
    cycle = load_cycle(workspace, old)
    assert cycle.state == "failed"
    assert cycle.error.startswith("interrupted:")
    assert load_cycle(workspace, new).state == "queued"
    assert load_cycle(workspace, 1).state == "promoted" and load_cycle(workspace, 1).error is None
    assert current(workspace.db).holder == f"cycle:{new}"
    # The dead cycle's late steps find it gone and cannot take the lease back.
    with (
        pytest.raises(CycleGoneError, match=f"cycle {old} is already failed"),
        claim_step(workspace, old, "train", "late-runner", short),
    ):
        pytest.fail("the step must not run")
    assert current(workspace.db).holder == f"cycle:{new}"


@pytest.mark.parametrize(
    "db_url",
    [pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration])],
    indirect=True,
)
def test_request_that_lost_its_lease_midway_leaves_nothing(workspace, db_url) -> None:
    """A request stalled past lease_s (here: blocked on a lock) while another holder took
    the expired lease: it must not queue a cycle whose lease belongs to someone else."""
    short = CycleSettings(lease_s=0.5, heartbeat_s=0.1)
    outcome: dict[str, object] = {}
    blocker = workspace.db.engine.connect()
    blocker.begin()
    # An uncommitted message with the key the request will use stalls its INSERT.
    blocker.execute(insert(OutboxMessage).values(topic="x", payload={}, dedupe_key="cycle:1"))

    def request() -> None:
        try:
            outcome["cycle_id"] = request_cycle(workspace, workspace.settings.learning, short)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=request)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while (lease := current(workspace.db)) is None or not lease.holder.startswith("request"):
            assert time.monotonic() < deadline, "the request never took the lease"
            time.sleep(0.01)
        time.sleep(0.7)  # the stalled request cannot renew: its lease expires
        assert acquire(workspace.db, "other", ttl_s=30) is not None
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(timeout=30)
    assert isinstance(outcome.get("error"), ConflictError), outcome
    assert current(workspace.db).holder == "other"
    assert count(workspace, Cycle) == 0 and messages(workspace) == []


# --- 4. claim_step ------------------------------------------------------------------------------
def test_claim_step_holds_both_leases_and_releases_the_step(workspace) -> None:
    db = workspace.db
    with (
        pytest.raises(CycleGoneError, match="no cycle 42"),
        claim_step(workspace, 42, "consensus", "r", CYCLES),
    ):
        pytest.fail("the step must not run")
    cycle_id = request_cycle(workspace, workspace.settings.learning, CYCLES)
    ran = []
    with claim_step(workspace, cycle_id, "consensus", "runner-a", CYCLES):
        ran.append(True)
        assert current(db).holder == f"cycle:{cycle_id}"
        step = current(db, name=STEP_LEASE)
        assert step.holder == "runner-a" and step.cycle_id == cycle_id
    assert ran
    assert current(db, name=STEP_LEASE) is None  # released after the block
    assert current(db).holder == f"cycle:{cycle_id}"  # the cycle keeps the project's lease

    with (
        pytest.raises(RuntimeError, match="step failed"),
        claim_step(workspace, cycle_id, "select", "runner-a", CYCLES),
    ):
        raise RuntimeError("step failed")
    assert current(db, name=STEP_LEASE) is None  # released on an error too

    # Another copy of the step runs: this delivery waits, and leaves that one's lease alone.
    assert acquire(db, "runner-b", 30, cycle_id, name=STEP_LEASE) is not None
    with (
        pytest.raises(StepBusyError, match=f"step select of cycle {cycle_id}"),
        claim_step(workspace, cycle_id, "select", "runner-a", CYCLES),
    ):
        pytest.fail("the step must not run")
    assert current(db, name=STEP_LEASE).holder == "runner-b"
    assert release(db, "runner-b", name=STEP_LEASE)

    # A copy that died: its step lease expires and the redelivery takes over.
    assert acquire(db, "dead-runner", 0.2, cycle_id, name=STEP_LEASE) is not None
    time.sleep(0.3)
    with claim_step(workspace, cycle_id, "select", "runner-c", CYCLES):
        assert current(db, name=STEP_LEASE).holder == "runner-c"
    assert not release(db, "dead-runner", name=STEP_LEASE)


def test_claim_step_conflict_when_another_holder_took_the_cycle_lease(workspace) -> None:
    db = workspace.db
    cycle_id = request_cycle(workspace, workspace.settings.learning, CYCLES)
    release_cycle(workspace, cycle_id)
    assert acquire(db, "api@elsewhere", 30) is not None
    with (
        pytest.raises(ConflictError, match="lost the project's cycle lock to api@elsewhere"),
        claim_step(workspace, cycle_id, "consensus", "runner-a", CYCLES),
    ):
        pytest.fail("the step must not run")
    assert current(db).holder == "api@elsewhere"
    assert current(db, name=STEP_LEASE) is None  # the step was never claimed
    assert load_cycle(workspace, cycle_id).state == "queued"


def test_claim_step_on_an_ended_cycle(workspace) -> None:
    db = workspace.db
    cycle_id = request_cycle(workspace, workspace.settings.learning, CYCLES)
    release_cycle(workspace, cycle_id)
    update_cycle(workspace, cycle_id, state="failed", error="boom")
    for step in ("consensus", "select", "train", "finish"):
        with (
            pytest.raises(CycleGoneError, match=f"cycle {cycle_id} is already failed"),
            claim_step(workspace, cycle_id, step, "r", CYCLES),
        ):
            pytest.fail("the step must not run")
    assert current(db) is None  # a gone cycle takes no lease
    assert current(db, name=STEP_LEASE) is None

    for state in ("promoted", "rejected"):
        update_cycle(workspace, cycle_id, state=state)
        for step in ("consensus", "select", "train"):
            with (
                pytest.raises(CycleGoneError, match=f"already {state}"),
                claim_step(workspace, cycle_id, step, "r", CYCLES),
            ):
                pytest.fail("the step must not run")
        assert current(db) is None
        # The finish step of a finished cycle still runs (a redelivery after the state was
        # written but before the lease was released): it returns the recorded result.
        with claim_step(workspace, cycle_id, "finish", "r", CYCLES):
            assert current(db).holder == f"cycle:{cycle_id}"
        release_cycle(workspace, cycle_id)


def test_claim_step_heartbeat_keeps_both_leases(workspace) -> None:
    db = workspace.db
    short = CycleSettings(lease_s=60, heartbeat_s=0.05)
    cycle_id = request_cycle(workspace, workspace.settings.learning, short)
    with claim_step(workspace, cycle_id, "train", "runner-a", short):
        # Both leases are renewed while the step runs: waited for, not timed.
        first = (current(db).expires_at, current(db, name=STEP_LEASE).expires_at)
        deadline = time.monotonic() + 60
        while not (
            current(db).expires_at > first[0] and current(db, name=STEP_LEASE).expires_at > first[1]
        ):
            assert time.monotonic() < deadline, "the heartbeat never renewed both leases"
            time.sleep(0.05)
        assert current(db).holder == f"cycle:{cycle_id}"
        assert current(db, name=STEP_LEASE).holder == "runner-a"
        with pytest.raises(ConflictError):
            request_cycle(workspace, workspace.settings.learning, short)
        with (
            pytest.raises(StepBusyError),
            claim_step(workspace, cycle_id, "train", "runner-b", short),
        ):
            pytest.fail("the step must not run")
    assert current(db, name=STEP_LEASE) is None
    # No one renews the cycle lease after the step: its expiry stays where it was.
    left = current(db).expires_at
    time.sleep(0.3)  # six heartbeats' time
    assert current(db).expires_at == left
    assert renew(db, f"cycle:{cycle_id}", 30)  # still its row until someone takes it


# --- 5. the feedback trigger ------------------------------------------------------------------
def add_feedback(ws: Workspace, n: int, at: datetime) -> None:
    """``n`` feedback items created at ``at`` (each on its own sample and prediction)."""
    with ws.db.session() as s:
        start = int(s.scalar(select(func.count()).select_from(Feedback)) or 0)
        for i in range(start, start + n):
            s.add(sample_row(i, source="t"))
            s.flush()  # plain foreign keys: the unit of work does not order these inserts
            pid = str(uuid.uuid4())
            s.add(
                Prediction(
                    id=pid,
                    sample_id=f"{i:064x}",
                    model_version="1",
                    label="a",
                    confidence=0.9,
                    top_k=[],
                    created_at=at,
                )
            )
            s.flush()
            s.add(
                Feedback(
                    id=str(uuid.uuid4()),
                    prediction_id=pid,
                    user_id=f"u{i}",
                    kind="confirm",
                    label="a",
                    created_at=at,
                )
            )


def test_feedback_trigger_counts_feedback_since_the_newest_cycle(workspace) -> None:
    t0 = utcnow() - timedelta(hours=1)
    assert feedback_since_last_cycle(workspace) == 0
    assert not feedback_trigger_due(workspace, 3)
    add_feedback(workspace, 2, t0)
    assert feedback_since_last_cycle(workspace) == 2  # no cycle yet: all of it
    assert not feedback_trigger_due(workspace, 3)
    add_feedback(workspace, 1, t0 + timedelta(minutes=1))
    assert feedback_trigger_due(workspace, 3)
    assert not feedback_trigger_due(workspace, 0)  # 0: the trigger is off
    assert not feedback_trigger_due(workspace, -1)

    # A cycle began after that feedback: it counts from the cycle's creation on.
    first = start_cycle(workspace, workspace.settings.learning)
    update_cycle(workspace, first, created_at=t0 + timedelta(minutes=2))
    assert feedback_since_last_cycle(workspace) == 0
    assert not feedback_trigger_due(workspace, 3)
    add_feedback(workspace, 3, t0 + timedelta(minutes=3))
    assert feedback_since_last_cycle(workspace) == 3
    assert feedback_trigger_due(workspace, 3) and not feedback_trigger_due(workspace, 4)

    # The newest cycle counts, not the first one.
    second = start_cycle(workspace, workspace.settings.learning)
    update_cycle(workspace, second, created_at=t0 + timedelta(minutes=4))
    add_feedback(workspace, 1, t0 + timedelta(minutes=5))
    assert feedback_since_last_cycle(workspace) == 1
    add_feedback(workspace, 2, t0 + timedelta(minutes=6))
    assert feedback_trigger_due(workspace, 3)

    # Not while a cycle holds the lease, however much feedback came in.
    assert acquire(workspace.db, "cycle:9", 30) is not None
    assert not feedback_trigger_due(workspace, 3)
    assert feedback_since_last_cycle(workspace) == 3  # still counted, just not due
    release(workspace.db, "cycle:9")
    assert feedback_trigger_due(workspace, 3)

    # A request made by the trigger starts the count again.
    third = request_cycle(workspace, workspace.settings.learning, CYCLES, trigger="feedback")
    release_cycle(workspace, third)
    assert feedback_since_last_cycle(workspace) == 0
    assert not feedback_trigger_due(workspace, 1)


# --- 6. hand_over ------------------------------------------------------------------------------
def test_hand_over_only_by_the_current_holder(workspace) -> None:
    db = workspace.db
    now = utcnow()
    assert not hand_over(db, "a", "b", 30, now=now)  # no lease at all: nothing created
    assert current(db, now=now) is None
    assert acquire(db, "a", 30, now=now) is not None
    assert not hand_over(db, "x", "b", 30, cycle_id=5, now=now)
    held = current(db, now=now)
    assert held.holder == "a" and held.cycle_id is None

    later = now + timedelta(seconds=10)
    assert hand_over(db, "a", "b", 60, cycle_id=5, now=later)
    held = current(db, now=later)
    assert held.holder == "b" and held.cycle_id == 5
    assert held.expires_at == later + timedelta(seconds=60)
    # "a" gave it away: it can no longer hand over, renew or release it.
    assert not hand_over(db, "a", "c", 30, now=later)
    assert not renew(db, "a", 30, now=later)
    assert not release(db, "a")
    assert current(db, now=later).holder == "b"
    # Other lease names are separate locks.
    assert not hand_over(db, "b", "c", 30, now=later, name=STEP_LEASE)
    assert current(db, now=later).holder == "b"
    with pytest.raises(ValueError):
        hand_over(db, "b", "c", 0, now=later)

    # An expired lease that another holder took over is no longer the old holder's.
    much_later = later + timedelta(seconds=61)
    assert acquire(db, "d", 30, now=much_later) is not None
    assert not hand_over(db, "b", "c", 30, now=much_later)
    assert current(db, now=much_later).holder == "d"
