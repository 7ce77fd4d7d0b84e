"""The step tasks in eager mode (no broker): the same task code, in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import workers.tasks as tasks
from flywheel.config import Settings
from flywheel.cycle.lease import current
from flywheel.cycle.requests import request_cycle
from flywheel.db import Cycle
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace, open_workspace
from workers.app import create_celery

TINY = {"ssl_epochs": 1, "train_epochs": 2, "fixmatch_epochs": 1, "steps_per_epoch": 1,
        "width": 4, "batch_size": 16}  # fmt: skip


@pytest.fixture
def eager(tmp_path: Path, db_url: str) -> tuple[Workspace, Settings]:
    settings = Settings(
        data_dir=tmp_path / "d",
        database={"url": db_url},
        learning=TINY,
        broker={"max_retries": 2},
    )
    app = create_celery(settings)
    # A worker handles a Retry by running the task again; in eager mode that only happens
    # when errors are not propagated at once (the final error still reaches .get()).
    app.conf.task_eager_propagates = False
    ws = open_workspace(settings)
    plan = SplitPlan(labels_per_class=3, test_fraction=0.3, seed=0)
    ingest_candidates(ws.db, ws.blobs, digits_candidates()[:150], "digits", settings.ingest, plan)
    tasks._resources.clear()
    yield ws, settings
    for resource_ws, _ in tasks._resources.values():
        resource_ws.close()
    tasks._resources.clear()
    ws.close()


def test_eager_chain_runs_a_whole_cycle(eager) -> None:
    """The chain the relay would publish runs here, step by step, with the same task code."""
    ws, settings = eager
    cycle_id = request_cycle(ws, settings.learning, settings.cycles)
    tasks.cycle_chain(cycle_id).apply().get()
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        assert cycle.state == "promoted" and set(cycle.outputs) == {
            "consensus", "profile", "select_plan", "selection", "train"
        }  # fmt: skip
        assert cycle.worker.startswith("finish:")
    assert current(ws.db) is None  # the finish step gave the lock back


def test_transient_errors_are_retried_then_the_cycle_goes_on(eager, monkeypatch) -> None:
    ws, settings = eager
    calls: list[int] = []
    real = tasks.run_consensus_step

    def flaky(ws_, cycle_id, progress=None):
        calls.append(cycle_id)
        if len(calls) <= 2:
            raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
        return real(ws_, cycle_id, progress)

    monkeypatch.setattr(tasks, "run_consensus_step", flaky)
    cycle_id = request_cycle(ws, settings.learning, settings.cycles)
    tasks.cycle_chain(cycle_id).apply().get()
    assert len(calls) == 3
    with ws.db.session() as s:
        assert s.get(Cycle, cycle_id).state == "promoted"


def test_transient_errors_past_max_retries_fail_the_cycle(eager, monkeypatch) -> None:
    ws, settings = eager
    calls: list[int] = []

    def down(ws_, cycle_id, progress=None):
        calls.append(cycle_id)
        raise OperationalError("SELECT 1", {}, Exception("no route to host"))

    monkeypatch.setattr(tasks, "run_consensus_step", down)
    cycle_id = request_cycle(ws, settings.learning, settings.cycles)
    with pytest.raises(OperationalError):
        tasks.cycle_chain(cycle_id).apply().get()
    assert len(calls) == 1 + settings.broker.max_retries
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        assert cycle.state == "failed" and "no route to host" in cycle.error
        assert s.scalar(select(func.count()).select_from(Cycle)) == 1
    assert current(ws.db) is None


def test_a_late_step_of_a_failed_cycle_does_nothing(eager) -> None:
    """A redelivered message of a cycle that already failed is dropped, not run."""
    ws, settings = eager
    cycle_id = request_cycle(ws, settings.learning, settings.cycles)
    with ws.db.session() as s:
        s.get(Cycle, cycle_id).state = "failed"
    result = tasks.cycle_select.apply(args=(cycle_id,))
    assert result.state == "IGNORED"
    with ws.db.session() as s:
        assert s.get(Cycle, cycle_id).dataset_version_out is None
