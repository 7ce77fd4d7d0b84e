"""A cycle's row in the database: its state, progress, recorded outputs and result.

Every step reads the cycle back by id and writes what it did here, so the CLI, the API and
the workers all see the same truth. ``outputs[name]`` is how a step knows it already ran
(DESIGN.md, habit 4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from flywheel.config import LearningSettings
from flywheel.cycle.select_plan import plan_of, planned_pool_index
from flywheel.db import Cycle
from flywheel.db.models import CycleState, CycleTrigger
from flywheel.errors import NotFoundError
from flywheel.learn.data import CycleData, ModelInput, load_cycle_data
from flywheel.learn.gate import GateDecision
from flywheel.workspace import Workspace

# (state, fraction of the cycle done, message): drives progress bars
Progress = Callable[[str, float, str], None]
# What a step reports through: records the state in the row, then calls ``Progress``.
Step = Callable[[CycleState, float, str], None]
STEPS = ("consensus", "select", "train", "finish")
PROFILE = "profile"  # outputs[PROFILE]: the data profile (flywheel.cycle.profile)
FINISHED = (CycleState.PROMOTED.value, CycleState.REJECTED.value, CycleState.FAILED.value)


@dataclass
class CycleResult:
    cycle_id: int
    state: str  # promoted | rejected
    dataset_version: str
    model_version: str
    gate: GateDecision
    metrics: dict[str, Any] = field(default_factory=dict)


def start_cycle(
    ws: Workspace, learning: LearningSettings, trigger: str = CycleTrigger.MANUAL
) -> int:
    """A queued cycle, to run here; its id."""
    with ws.db.session() as s:
        cycle = queued_cycle(learning, trigger)
        s.add(cycle)
        s.flush()
        return cycle.id


def fail_cycle(ws: Workspace, cycle_id: int, exc: BaseException) -> None:
    """Mark the cycle failed with the reason (the exception's type and message)."""
    update_cycle(ws, cycle_id, state=CycleState.FAILED.value, error=f"{type(exc).__name__}: {exc}")


def load_cycle(ws: Workspace, cycle_id: int) -> Cycle:
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        if cycle is None:
            raise NotFoundError(f"no cycle {cycle_id}")
        s.expunge(cycle)
    return cycle


def queued_cycle(learning: LearningSettings, trigger: str, message: str | None = None) -> Cycle:
    """A new cycle row; its steps read ``learning`` back from it (its ``params``)."""
    return Cycle(
        state=CycleState.QUEUED.value,
        params=learning.model_dump(),
        progress=0.0,
        trigger=trigger,
        outputs={},
        message=message,
    )


def update_cycle(ws: Workspace, cycle_id: int, **fields: Any) -> None:
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        if cycle is None:
            raise NotFoundError(f"no cycle {cycle_id}")
        for key, value in fields.items():
            setattr(cycle, key, value)


def record_output_in(s: Session, cycle_id: int, name: str, value: Any, **fields: Any) -> None:
    """Add ``outputs[name]`` (and ``fields``) to the cycle inside the caller's transaction."""
    cycle = s.get(Cycle, cycle_id)
    cycle.outputs = {**(cycle.outputs or {}), name: value}  # a new dict: JSON columns
    for key, value_ in fields.items():  # are only saved when reassigned
        setattr(cycle, key, value_)


def record_output(ws: Workspace, cycle_id: int, name: str, value: Any, **fields: Any) -> None:
    with ws.db.session() as s:
        record_output_in(s, cycle_id, name, value, **fields)


def cycle_learning(cycle: Cycle) -> LearningSettings:
    """The learning settings the cycle was queued with, and what its data profile decided
    for the keys left to the data (``flywheel.cycle.profile``): every step uses the same."""
    learning = LearningSettings.model_validate(cycle.params or {})
    profile = (cycle.outputs or {}).get(PROFILE)
    if profile:
        learning = learning.model_copy(
            update={"channels": profile["channels"], "augment": profile["augment"]}
        )
    return learning


def load_data(ws: Workspace, cycle_id: int, learning: LearningSettings) -> CycleData:
    """The cycle's data. Once its select step planned, at the input size and on the pool
    of the plan: samples arriving between steps change neither what the later steps see.

    The pool is not read here: at a million images one process would read them all. The
    steps that read pool images find lost ones as they read (flywheel.cycle.lost_samples):
    a shard checks its own, the plan and the train step run again without them."""
    cycle = load_cycle(ws, cycle_id)
    plan = plan_of(cycle)
    selection = (cycle.outputs or {}).get("selection") or {}
    recorded = ModelInput.from_dict(selection.get("input"))
    if recorded is None and plan is not None:
        recorded = plan.spec
    size = recorded.size if recorded is not None else learning.image_size
    pool = planned_pool_index(ws, cycle_id, plan) if plan is not None else None
    return load_cycle_data(
        ws.db,
        ws.blobs,
        size,
        learning.channels,
        resize=learning.resize,
        cycle_id=cycle_id,
        cache_bytes=learning.pool_cache_mb << 20,
        planned_pool=pool,
    )


def reporter(ws: Workspace, cycle_id: int, progress: Progress | None) -> Step:
    def step(state: CycleState, fraction: float, message: str) -> None:
        update_cycle(
            ws, cycle_id, state=state.value, step=state.value, progress=fraction, message=message
        )
        if progress:
            progress(state.value, fraction, message)

    return step


def finished_selection_rounds(ws: Workspace) -> int:
    """How many earlier cycles selected pseudo-labels: drives the agreement quota."""
    with ws.db.session() as s:
        metrics = s.scalars(
            select(Cycle.metrics).where(
                Cycle.state.in_([CycleState.PROMOTED.value, CycleState.REJECTED.value])
            )
        ).all()
    return sum(1 for m in metrics if (m or {}).get("selection_round") is not None)


def result_of(cycle: Cycle) -> CycleResult:
    """A finished cycle's result, read back from its row."""
    metrics = dict(cycle.metrics or {})
    gate = GateDecision(**metrics["gate"])
    return CycleResult(
        cycle.id,
        cycle.state,
        cycle.dataset_version_out or "",
        str(metrics["model_version"]),
        gate,
        metrics,
    )
