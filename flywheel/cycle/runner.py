"""Starting and running cycles: the one way every entry point (CLI, API, beat, workers) does it.

- Here, in this process (the embedded default): :func:`run_cycle` runs the four steps one
  after another; :func:`claim_cycle` takes the project's lock and queues the row first, so
  only one cycle runs at a time across processes.
- On the workers (a broker is configured): :func:`queue_cycle` records the cycle and its
  outbox message in one transaction and hands the message to the broker through the
  injected ``publish`` (``workers.tasks.publish``); the workers run the same steps as a
  Celery chain, so both paths give the same dataset versions and models.

Every step records its state, progress and output in the cycles table, so the CLI, the API
and the workers all see the same truth; the training is logged as one MLflow run per cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flywheel.config import LearningSettings, Settings
from flywheel.cycle.guard import exclusive_cycles
from flywheel.cycle.outbox import Publish, RelayReport, relay
from flywheel.cycle.requests import request_cycle
from flywheel.cycle.state import CycleResult, Progress, fail_cycle, start_cycle
from flywheel.cycle.steps.consensus import run_consensus_step
from flywheel.cycle.steps.finish import run_finish_step
from flywheel.cycle.steps.select import run_select_step
from flywheel.cycle.steps.train import run_train_step
from flywheel.db.models import CycleTrigger
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace


def run_cycle(
    ws: Workspace,
    registry: ModelRegistry,
    learning: LearningSettings,
    progress: Progress | None = None,
    cycle_id: int | None = None,
) -> CycleResult:
    """Run one full cycle here; on any error the cycle is marked ``failed`` with the reason.

    ``cycle_id`` continues a queued (or interrupted) cycle: finished steps are skipped.
    """
    cycle_id = cycle_id if cycle_id is not None else start_cycle(ws, learning)
    try:
        run_consensus_step(ws, cycle_id, progress)
        run_select_step(ws, registry, cycle_id, progress)
        run_train_step(ws, registry, cycle_id, progress)
        return run_finish_step(ws, registry, cycle_id, progress)
    except BaseException as exc:
        fail_cycle(ws, cycle_id, exc)
        raise


@contextmanager
def claim_cycle(
    ws: Workspace, learning: LearningSettings, holder: str, trigger: str = CycleTrigger.MANUAL
) -> Iterator[int]:
    """Hold the project's cycle lock and queue a cycle to run here; yields its id.

    ConflictError, naming the running cycle, while another process holds the lock. The lock
    is held (and renewed) until the block ends: run the cycle inside it.
    """
    with exclusive_cycles(ws.db, holder):
        yield start_cycle(ws, learning, trigger)


def run_cycles_here(
    ws: Workspace,
    registry: ModelRegistry,
    learning: LearningSettings,
    count: int,
    holder: str,
    progress_for: Callable[[int], Progress | None] = lambda n: None,
    on_result: Callable[[int, CycleResult], object] = lambda n, result: None,
) -> list[CycleResult]:
    """``count`` cycles one after another in this process, holding the lock throughout (no
    other process starts one in between). ``progress_for(n)`` gives the n-th cycle's
    progress callback (1-based); ``on_result(n, result)`` hears when it ends."""
    results = []
    with exclusive_cycles(ws.db, holder):
        for n in range(1, count + 1):
            results.append(run_cycle(ws, registry, learning, progress_for(n)))
            on_result(n, results[-1])
    return results


def queue_cycle(
    ws: Workspace, settings: Settings, trigger: str, publish: Publish | None
) -> tuple[int, RelayReport | None]:
    """Queue a cycle for the workers; ConflictError while another one runs.

    With ``publish`` the outbox is relayed now (a broker that is down leaves the message for
    the next relay: beat, the API or the CLI); without it the caller relays later. Returns
    the cycle id and the relay's report (None when not relayed).
    """
    cycle_id = request_cycle(ws, settings.learning, settings.cycles, trigger)
    report = relay(ws.db, publish) if publish is not None else None
    return cycle_id, report
