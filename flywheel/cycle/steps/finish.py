"""Step 4 (CPU): the gate's decision applied (promotion) and the cycle's final state."""

from __future__ import annotations

from flywheel.cycle.state import (
    FINISHED,
    CycleResult,
    Progress,
    load_cycle,
    result_of,
    update_cycle,
)
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace


def run_finish_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> CycleResult:
    """Apply the gate's decision (promote or not) and close the cycle."""
    cycle = load_cycle(ws, cycle_id)
    train = (cycle.outputs or {}).get("train")
    if train is None:
        raise InvalidInputError(f"cycle {cycle_id} has no trained model yet: run its train step")
    if cycle.state not in FINISHED:
        if train["promote"]:
            champion = registry.champion()
            if champion is None or champion.version != train["model_version"]:
                registry.promote(train["model_version"], train["reason"])
        state = CycleState.PROMOTED if train["promote"] else CycleState.REJECTED
        update_cycle(ws, cycle_id, state=state.value, step=state.value, progress=1.0, message="")
        if progress:
            progress(state.value, 1.0, state.value)
        cycle = load_cycle(ws, cycle_id)
    return result_of(cycle)
