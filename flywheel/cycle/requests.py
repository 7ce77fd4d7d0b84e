"""Queued cycles for workers: the request, and the lock each step holds.

A request takes the project's cycle lease, records a queued cycle and an outbox message in
one transaction, and hands the lease to the cycle (holder ``cycle:<id>``). A relay then
publishes the message to the broker (:mod:`flywheel.cycle.outbox`): with the broker down, the
cycle waits in the database and nothing is lost.

Every step of the cycle, on whichever worker runs it, claims two leases for its duration
and renews them from a heartbeat:

- the project's cycle lease, as ``cycle:<id>``: no other cycle can start meanwhile, and if
  every worker died it expires, so the project is never locked for good;
- the step lease, as this delivery of this step: a duplicate delivery of the same step (a
  message redelivered while the first copy still runs) waits instead of working twice.

A redelivered step whose first copy died claims the step lease once it expires, finds the
outputs the dead copy recorded (:mod:`flywheel.cycle.state`), and goes on from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flywheel.config import CycleSettings, LearningSettings
from flywheel.cycle.guard import busy_message, fail_interrupted_cycles, holder_id, keep_alive
from flywheel.cycle.lease import DEFAULT_NAME, acquire, current, hand_over, release
from flywheel.cycle.outbox import enqueue
from flywheel.cycle.state import queued_cycle
from flywheel.db import Cycle
from flywheel.db.models import CycleState, CycleTrigger
from flywheel.errors import ConflictError, FlywheelError
from flywheel.workspace import Workspace

CYCLE_TOPIC = "cycle.run"  # outbox topic: payload {"cycle_id": id}
STEP_LEASE = "cycle-step"


class CycleGoneError(FlywheelError):
    """The cycle already ended (failed elsewhere, or finished): a late step has nothing to do."""


class StepBusyError(FlywheelError):
    """Another delivery of this step is running right now: try again after a heartbeat."""


def cycle_holder(cycle_id: int) -> str:
    return f"cycle:{cycle_id}"


def request_cycle(
    ws: Workspace,
    learning: LearningSettings,
    cycles: CycleSettings,
    trigger: str = CycleTrigger.MANUAL,
) -> int:
    """Queue a cycle for the workers; ConflictError (naming it) while another one runs."""
    temporary = holder_id("request")
    if acquire(ws.db, temporary, cycles.lease_s) is None:
        raise ConflictError(busy_message(ws.db))
    try:
        fail_interrupted_cycles(ws.db)  # we hold the lease: no one else can be running one
        with ws.db.session() as s:
            cycle = queued_cycle(learning, trigger, "waiting for a worker")
            s.add(cycle)
            s.flush()
            cycle_id = cycle.id
            enqueue(s, CYCLE_TOPIC, {"cycle_id": cycle_id}, dedupe_key=f"cycle:{cycle_id}")
            # In the same transaction: a worker handed the message finds the lease already
            # the cycle's, and a request that stalled past lease_s (another holder took the
            # lease over) leaves no queued cycle behind.
            holder = cycle_holder(cycle_id)
            if not hand_over(ws.db, temporary, holder, cycles.lease_s, cycle_id, session=s):
                raise ConflictError(busy_message(ws.db))
    except BaseException:
        release(ws.db, temporary)
        raise
    return cycle_id


@contextmanager
def claim_step(
    ws: Workspace,
    cycle_id: int,
    step: str,
    runner: str,
    cycles: CycleSettings,
    lease_name: str = STEP_LEASE,
) -> Iterator[None]:
    """Hold the cycle lease and ``step``'s lease (as ``runner``) while the block runs.
    ``lease_name``: the step lease's; steps that run at once (a select step's shards) each
    need their own.

    CycleGoneError: the cycle already ended. StepBusyError: another copy of the step runs.
    ConflictError: another cycle took the project's lease (this one waited past it).
    """
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        state = cycle.state if cycle is not None else None
    if state is None:
        raise CycleGoneError(f"no cycle {cycle_id}")
    if state == CycleState.FAILED or (
        state in (CycleState.PROMOTED, CycleState.REJECTED) and step != "finish"
    ):
        raise CycleGoneError(f"cycle {cycle_id} is already {state}")
    holder = cycle_holder(cycle_id)
    if acquire(ws.db, holder, cycles.lease_s, cycle_id) is None:
        lease = current(ws.db)
        other = lease.holder if lease else "another holder"
        raise ConflictError(
            f"cycle {cycle_id} lost the project's cycle lock to {other} while it waited "
            f"longer than cycles.lease_s ({cycles.lease_s:g} s) for a worker"
        )
    if acquire(ws.db, runner, cycles.lease_s, cycle_id, name=lease_name) is None:
        raise StepBusyError(f"step {step} of cycle {cycle_id} is being run by another worker")
    try:
        leases = [(DEFAULT_NAME, holder), (lease_name, runner)]
        with keep_alive(ws.db, leases, cycles.lease_s, cycles.heartbeat_s):
            yield
    finally:
        release(ws.db, runner, name=lease_name)


def release_cycle(ws: Workspace, cycle_id: int) -> None:
    """Give the project's cycle lease back (the cycle finished or failed)."""
    release(ws.db, cycle_holder(cycle_id))
