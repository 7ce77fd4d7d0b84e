"""One turn of the wheel: embed -> select -> version -> train -> evaluate -> gate -> promote.

``run_cycle`` runs the steps of :mod:`flywheel.cycle.steps_all` one after another in this
process (the embedded default). With a broker, workers run the very same steps as a Celery
chain (``workers/``), so both paths give the same dataset versions and models. Every step
records its state, progress and output in the cycles table, so the CLI, the API and the
workers all see the same truth; the training is logged as one MLflow run per cycle.
"""

from __future__ import annotations

from flywheel.config import LearningSettings
from flywheel.cycle.steps_all import (
    PSEUDO_METHOD,
    CycleResult,
    Progress,
    queued_cycle,
    run_consensus_step,
    run_finish_step,
    run_select_step,
    run_train_step,
    update_cycle,
    write_selection,
)
from flywheel.db.models import CycleState
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace

__all__ = [
    "PSEUDO_METHOD",
    "CycleResult",
    "Progress",
    "fail_cycle",
    "run_cycle",
    "start_cycle",
    "write_selection",
]


def start_cycle(ws: Workspace, learning: LearningSettings, trigger: str = "manual") -> int:
    """A queued cycle, to run here; its id."""
    with ws.db.session() as s:
        cycle = queued_cycle(learning, trigger)
        s.add(cycle)
        s.flush()
        return cycle.id


def fail_cycle(ws: Workspace, cycle_id: int, exc: BaseException) -> None:
    """Mark the cycle failed with the reason (the exception's type and message)."""
    update_cycle(ws, cycle_id, state=CycleState.FAILED.value, error=f"{type(exc).__name__}: {exc}")


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
