"""Celery tasks: thin wrappers that take ids, call ``flywheel``, and return plain values.

A cycle is the chain ``consensus (cpu) -> select (gpu) -> train (gpu) -> finish (cpu)``
(:func:`cycle_chain`). The select task plans, then replaces itself with a chord: one
``cycle_select_shard`` per shard of the pool, on every GPU worker at once, then
``cycle_select_merge``; the chain goes on after it.

Each task re-reads the cycle from the database, holds the cycle and step leases while it
runs (:func:`flywheel.cycle.requests.claim_step`), and calls the idempotent step of
:mod:`flywheel.cycle.steps`, so a redelivered task never duplicates labels, dataset versions
or models.

Errors: transient ones (database or broker unreachable, another copy of the step still
running) are retried with exponential backoff; any other error is permanent: the cycle is
marked ``failed`` with the reason, its lock is released, and the chain stops.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from celery import Task, chain, chord, shared_task
from celery.exceptions import Ignore
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError as DatabaseError

from flywheel.config import Settings
from flywheel.cycle.outbox import backoff_s, relay
from flywheel.cycle.requests import (
    CYCLE_TOPIC,
    STEP_LEASE,
    CycleGoneError,
    StepBusyError,
    claim_step,
    release_cycle,
)
from flywheel.cycle.runner import queue_cycle
from flywheel.cycle.state import fail_cycle, update_cycle
from flywheel.cycle.steps.consensus import run_consensus_step
from flywheel.cycle.steps.finish import run_finish_step
from flywheel.cycle.steps.select import plan_select_step
from flywheel.cycle.steps.select_merge import run_select_merge_step
from flywheel.cycle.steps.select_shard import run_select_shard
from flywheel.cycle.steps.train import run_train_step
from flywheel.cycle.triggers import check_drift_and_trigger, check_feedback_and_trigger
from flywheel.db.models import CycleTrigger
from flywheel.errors import ConflictError
from flywheel.learn.registry import ModelRegistry
from flywheel.workspace import Workspace, open_workspace

log = logging.getLogger("flywheel.workers")

# Worth another try later: the outage ends, the other copy of the step finishes.
TRANSIENT = (
    DatabaseError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)

_resources: dict[int, tuple[Workspace, ModelRegistry]] = {}


def _open(settings: Settings) -> tuple[Workspace, ModelRegistry]:
    """One workspace and registry per process: opened in the pool process that uses them,
    never inherited across a fork (database connections must not be shared)."""
    pid = os.getpid()
    if pid not in _resources:
        _resources[pid] = (open_workspace(settings), ModelRegistry.from_settings(settings))
    return _resources[pid]


def _settings(task: Task) -> Settings:
    return task.app.flywheel_settings


def _describe(queue: str) -> dict[str, str | int]:
    return {"queue": queue, "host": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="workers.tasks.ping")
def ping() -> dict[str, str | int]:
    """An empty task: proves a CPU worker answers, and measures the broker's overhead."""
    return _describe("cpu")


@shared_task(name="workers.tasks.ping_gpu")
def ping_gpu() -> dict[str, str | int]:
    """The same for the GPU queue."""
    return _describe("gpu")


# --- cycle steps ---------------------------------------------------------------------------
StepFn = Callable[[Workspace, ModelRegistry, int], Any]


def _run_step(task: Task, step: str, cycle_id: int, fn: StepFn, lease: str = STEP_LEASE) -> Any:
    settings = _settings(task)
    ws, registry = _open(settings)
    runner = f"{step}:{task.request.id}@{socket.gethostname()}:{os.getpid()}"
    try:
        with claim_step(ws, cycle_id, step, runner, settings.cycles, lease):
            update_cycle(ws, cycle_id, worker=runner, error=None)
            result = fn(ws, registry, cycle_id)
    except CycleGoneError as exc:
        log.info("skipping %s: %s", step, exc)
        raise Ignore() from exc  # stops the chain without a failure to report
    except StepBusyError as exc:
        # Not counted against max_retries: the other copy either finishes or dies, and then
        # its step lease expires within cycles.lease_s.
        raise task.retry(exc=exc, countdown=settings.cycles.heartbeat_s, max_retries=None) from exc
    except TRANSIENT as exc:
        if task.request.retries < settings.broker.max_retries:
            log.warning("%s of cycle %s: transient error, retrying: %s", step, cycle_id, exc)
            raise task.retry(exc=exc, countdown=backoff_s(task.request.retries + 1)) from exc
        _give_up(ws, cycle_id, exc)
        raise
    except Exception as exc:
        _give_up(ws, cycle_id, exc)
        raise
    if step == "finish":
        release_cycle(ws, cycle_id)
    return result


def _give_up(ws: Workspace, cycle_id: int, exc: BaseException) -> None:
    try:
        fail_cycle(ws, cycle_id, exc)
    finally:
        release_cycle(ws, cycle_id)


def _step_task(step: str) -> Callable[[StepFn], Task]:
    def register(fn: StepFn) -> Task:
        # ignore_result: a cycle's state lives in the cycles table. Storing results would also
        # make every publish subscribe to the result backend first, and while Redis is down
        # that subscription retries for ~20 s inside the outbox relay.
        @shared_task(
            bind=True, name=f"workers.tasks.cycle_{step}", max_retries=None, ignore_result=True
        )
        def task(self: Task, cycle_id: int) -> Any:
            return _run_step(self, step, cycle_id, fn)

        task.__doc__ = fn.__doc__
        return task

    return register


@_step_task("consensus")
def cycle_consensus(ws: Workspace, registry: ModelRegistry, cycle_id: int) -> dict:
    """Users' feedback becomes labels (CPU)."""
    return run_consensus_step(ws, cycle_id)


@shared_task(bind=True, name="workers.tasks.cycle_select", max_retries=None, ignore_result=True)
def cycle_select(self: Task, cycle_id: int) -> Any:
    """The SSL model, the embeddings judged, the pool split into shards (GPU); then the
    shards as a chord, which the chain's next link follows."""

    def plan(ws: Workspace, registry: ModelRegistry, cid: int) -> int:
        return plan_select_step(ws, registry, cid)[0].shards

    shards = _run_step(self, "select", cycle_id, plan)
    merge = cycle_select_merge.si(cycle_id)
    if not shards:  # an empty pool: a chord needs a header
        return self.replace(merge)
    return self.replace(chord([cycle_select_shard.si(cycle_id, k) for k in range(shards)], merge))


@shared_task(bind=True, name="workers.tasks.cycle_select_shard", max_retries=None)
def cycle_select_shard(self: Task, cycle_id: int, shard: int) -> dict[str, Any]:
    """Embed and score one shard of the pool into the store (GPU). Its result is stored:
    the chord counts the shards done in the result backend."""

    def run(ws: Workspace, registry: ModelRegistry, cid: int) -> dict[str, Any]:
        return run_select_shard(ws, registry, cid, shard)

    # Its own step lease: the shards of a cycle run at once, a copy of one shard waits.
    return _run_step(self, f"select-shard-{shard}", cycle_id, run, f"{STEP_LEASE}:shard-{shard}")


@_step_task("select_merge")
def cycle_select_merge(ws: Workspace, registry: ModelRegistry, cycle_id: int) -> str:
    """Select from the stored shards, write the labels and a dataset version (GPU)."""
    return run_select_merge_step(ws, registry, cycle_id)


@_step_task("train")
def cycle_train(ws: Workspace, registry: ModelRegistry, cycle_id: int) -> dict:
    """Train, evaluate, gate and register the model (GPU)."""
    return run_train_step(ws, registry, cycle_id)


@_step_task("finish")
def cycle_finish(ws: Workspace, registry: ModelRegistry, cycle_id: int) -> dict:
    """Promote if the gate said so; the cycle's final state (CPU)."""
    result = run_finish_step(ws, registry, cycle_id)
    return {"state": result.state, "model_version": result.model_version}


def cycle_chain(cycle_id: int) -> chain:
    """The whole cycle as one canvas; each link is routed to its queue (workers.app)."""
    return chain(
        cycle_consensus.si(cycle_id),
        cycle_select.si(cycle_id),
        cycle_train.si(cycle_id),
        cycle_finish.si(cycle_id),
    )


# --- outbox relay and triggers -------------------------------------------------------------
def publish(topic: str, payload: dict[str, Any]) -> None:
    """Hand one outbox message to the broker (raises while the broker is unreachable)."""
    if topic != CYCLE_TOPIC:
        raise ValueError(f"unknown outbox topic {topic!r}")
    cycle_chain(int(payload["cycle_id"])).apply_async(retry=False)


def relay_and_trigger(ws: Workspace, settings: Settings) -> dict[str, int | None]:
    """Start a cycle if enough feedback arrived, then relay the outbox to the broker."""
    started = check_feedback_and_trigger(
        ws, settings, lambda trigger: queue_cycle(ws, settings, trigger, None)[0]
    )
    report = relay(ws.db, publish)
    return {"sent": report.sent, "failed": report.failed, "cycle_started": started}


@shared_task(bind=True, name="workers.tasks.relay_outbox", ignore_result=True)
def relay_outbox(self: Task) -> dict[str, int | None]:
    """Beat runs this every cycles.relay_interval_s: the backstop relay and feedback trigger."""
    settings = _settings(self)
    ws, _ = _open(settings)
    return relay_and_trigger(ws, settings)


@shared_task(bind=True, name="workers.tasks.scheduled_cycle")
def scheduled_cycle(self: Task) -> dict[str, Any]:
    """Beat's schedule (triggers.schedule_*): queue a cycle unless one is running."""
    settings = _settings(self)
    ws, _ = _open(settings)
    try:
        cycle_id, _ = queue_cycle(ws, settings, CycleTrigger.SCHEDULE, publish)
    except ConflictError as exc:
        log.info("scheduled cycle skipped: %s", exc)
        return {"cycle_id": None, "skipped": str(exc)}
    return {"cycle_id": cycle_id}


@shared_task(bind=True, name="workers.tasks.watch_drift")
def watch_drift(self: Task) -> dict[str, Any]:
    """Beat runs this every drift.check_interval_s: queue a cycle when inputs drifted."""
    settings = _settings(self)
    ws, registry = _open(settings)
    report, cycle_id = check_drift_and_trigger(
        ws, registry, settings, lambda trigger: queue_cycle(ws, settings, trigger, publish)[0]
    )
    return {
        "drifted": report.drifted if report else None,
        "mmd": report.mmd if report else None,
        "cycle_id": cycle_id,
    }
