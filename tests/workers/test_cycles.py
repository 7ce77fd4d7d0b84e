"""Cycles through the broker: real Redis, real ``celery worker`` processes, real faults.

Each test starts its own workers (and, for the outage, its own Redis) and stops them.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import func, select

from flywheel.cycle.lease import current
from flywheel.cycle.outbox import pending
from flywheel.cycle.requests import STEP_LEASE, request_cycle
from flywheel.db import Label
from flywheel.db.models import CycleLease
from flywheel.errors import ConflictError
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.registry import ModelRegistry
from tests.conftest import postgres_schema_url
from tests.workers.conftest import LIVENESS_S, TEST_TIMEOUT_S, cycle_summary, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(TEST_TIMEOUT_S)]

BROKER_A = "redis://127.0.0.1:6379/9"


def count(worker, task: str) -> int:  # type: ignore[no-untyped-def]
    """How many ``task`` messages ``worker`` received (a redelivered one counts once)."""
    return len(worker.messages(task))


def test_cycles_through_the_broker_match_the_embedded_run(make_deployment, eager_reference):
    """Same data and seed: the chain on a CPU and a GPU worker gives the eager results, and
    each step ran on the queue it is routed to."""
    dep = make_deployment("broker", broker_url=BROKER_A)
    cpu = dep.start_worker("cpu", queues="cpu", wait=False)
    gpu = dep.start_worker("gpu", queues="gpu", wait=False)
    dep.wait_ready(cpu)
    dep.wait_ready(gpu)
    out = dep.cli("cycle", "run", "-n", "2", "--wait")
    assert out.returncode == 0, out.stderr
    assert "promoted v1" in out.stdout
    assert [cycle_summary(dep, c) for c in (1, 2)] == eager_reference
    # One message per step of each cycle, each on its queue (counted by message id: a
    # message delivered again on a loaded machine is the same message).
    assert count(cpu, "cycle_consensus") == count(cpu, "cycle_finish") == 2
    assert count(gpu, "cycle_select") == count(gpu, "cycle_train") == 2
    # Each select step fanned out: one task per shard of its plan, then one merge.
    shards = sum(dep.cycle(c).outputs["select_plan"]["shards"] for c in (1, 2))
    assert shards >= 6 and count(gpu, "cycle_select_shard") == shards
    assert count(gpu, "cycle_select_merge") == 2
    assert count(cpu, "cycle_select") == count(gpu, "cycle_consensus") == 0
    assert dep.cycle(2).trigger == "manual" and current(dep.ws.db) is None  # lock released


def test_a_worker_killed_mid_step_is_replaced_without_duplicates(make_deployment, eager_reference):
    """Two requests at once run one cycle. Then SIGKILL the worker (main process and pool)
    in the middle of training: its task is redelivered to the other worker, the cycle
    completes, and its dataset version, labels and model equal an uninterrupted run's, with
    no label or model version twice."""
    with postgres_schema_url() as url:
        dep = make_deployment("kill", database_url=url, broker_url=BROKER_A)
        a, b = dep.start_workers("a", "b")
        # Two requests at once, two idle workers that could run both: exactly one cycle is
        # queued and runs; the other request is refused.
        runs = [dep.root / f"run-{n}.log" for n in (1, 2)]
        codes = [
            p.wait(LIVENESS_S) for p in [dep.popen("cycle", "run", "--wait", log=r) for r in runs]
        ]
        logs = [r.read_text() for r in runs]
        assert sorted(codes) == [0, 1], logs
        assert "one cycle at a time" in logs[codes.index(1)], logs
        assert len(a.messages("cycle_select") | b.messages("cycle_select")) == 1

        queued = dep.cli("cycle", "run", "--no-wait")
        assert queued.returncode == 0 and "queued cycle 2" in queued.stdout
        assert dep.cycle(2).created_at >= dep.cycle(1).updated_at  # after cycle 1 ended

        def training() -> str | None:
            c = dep.cycle(2)
            match = re.match(r"epoch (\d+)/", c.message or "")
            return c.worker if c.state == "training" and match and int(match[1]) >= 3 else None

        runner = wait_until(training, LIVENESS_S, "cycle 2 to be mid-training")
        # One cycle at a time: a second request is refused while cycle 2 runs.
        with pytest.raises(ConflictError, match="cycle 2 is running by cycle:2"):
            request_cycle(dep.ws, dep.settings.learning, dep.settings.cycles)
        pid = int(runner.rsplit(":", 1)[1])
        victim, survivor = (a, b) if a.owns(pid) else (b, a)
        assert victim.owns(pid), runner
        killed_run = dep.cycle(2).mlflow_run_id
        victim.kill()

        done = dep.wait_cycle(2)
        assert survivor.owns(int(done.worker.rsplit(":", 1)[1])), done.worker
        assert survivor.received("cycle_train") >= 1
        assert [cycle_summary(dep, c) for c in (1, 2)] == eager_reference
        registry = ModelRegistry.from_settings(dep.settings)
        assert [v.tags["cycle_id"] for v in registry.versions()] == ["1", "2"]
        assert registry.client.get_run(killed_run).info.status == "KILLED"
        assert done.mlflow_run_id != killed_run
        with dep.ws.db.session() as s:
            per_sample = s.execute(
                select(Label.sample_id, func.count())
                .where(Label.cycle_id == 2)
                .group_by(Label.sample_id)
                .having(func.count() > 1)
            ).all()
        assert per_sample == []  # no sample got two labels from the cycle
        assert current(dep.ws.db) is None
        dep.stop()


def test_a_worker_killed_mid_shard_has_that_shard_redone_alone(make_deployment, eager_reference):
    """Small shards, two GPU workers. SIGKILL one of them while it runs a shard of the
    select step: that shard is redelivered to the other worker, every shard's vectors are
    stored once, and the cycle ends as the embedded run's did (the shard size changes
    nothing)."""
    dep = make_deployment("shard-kill", broker_url=BROKER_A, cycles={"shard_size": 40})
    a, b = dep.start_workers("a", "b")
    assert dep.cli("cycle", "run", "--no-wait").returncode == 0

    def mid_shard() -> str | None:
        """A shard task's runner while it runs: it holds its shard's step lease from its
        start to its end, before its message is acknowledged."""
        with dep.ws.db.session() as s:
            return s.scalars(
                select(CycleLease.holder).where(CycleLease.name.like(f"{STEP_LEASE}:shard-%"))
            ).first()

    runner = wait_until(mid_shard, LIVENESS_S, "a shard task of cycle 1 to run", every=0.01)
    pid = int(runner.rsplit(":", 1)[1])
    victim, survivor = (a, b) if a.owns(pid) else (b, a)
    assert victim.owns(pid), runner
    victim.kill()

    done = dep.wait_cycle(1)
    plan = done.outputs["select_plan"]
    assert cycle_summary(dep, 1) == eager_reference[0]
    # Every shard ran to its end once; the killed one was received twice.
    received = victim.received("cycle_select_shard") + survivor.received("cycle_select_shard")
    assert received > plan["shards"] >= 20
    store = EmbeddingStore(dep.settings.storage_root)
    # each shard written once, beside the labeled and test vectors embedded by the plan
    assert len(store.shards(plan["fingerprint"])) == plan["shards"] + 2
    assert current(dep.ws.db) is None


def test_a_permanent_error_fails_the_cycle_once(make_deployment):
    """Images without labels: the select step cannot work. The cycle fails with the reason,
    the step is not retried, the chain stops, and the lock is free for the next cycle."""
    dep = make_deployment("broken", broker_url=BROKER_A, ingest=False)
    worker = dep.start_worker("w", wait=False)
    out = dep.cli("ingest", "digits", "--labels-per-class", "0", "--test-fraction", "0")
    assert out.returncode == 0, out.stderr
    dep.wait_ready(worker)
    run = dep.cli("cycle", "run", "--wait")
    assert run.returncode == 1
    assert "at least two classes" in run.stderr
    failed = dep.cycle(1)
    assert failed.state == "failed" and "InvalidInputError" in failed.error
    time.sleep(1.0)  # time enough for a retry or the next link, if there were one
    assert worker.received("cycle_select") == 1 and "Retry in" not in worker.text()
    assert worker.received("cycle_train") == 0
    assert current(dep.ws.db) is None
    again = dep.cli("cycle", "run", "--no-wait")
    assert again.returncode == 0 and "queued cycle 2" in again.stdout
    wait_until(lambda: dep.cycle(2).state == "failed", LIVENESS_S, "cycle 2 to fail the same way")
    assert pending(dep.ws.db) == 0
