"""Pool images lost after the plan checked them (deleted or corrupted in the store while the
cycle runs) are quarantined by the step that meets them, and the cycle ends without them.

Real SQLite, real blob store on disk, real (tiny) torch models.
"""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.cycle.lost_samples import MAX_RUNS, run_without_lost_samples
from flywheel.cycle.select_plan import read_shard_ids
from flywheel.cycle.state import cycle_learning, load_cycle, load_data, start_cycle
from flywheel.cycle.steps.consensus import run_consensus_step
from flywheel.cycle.steps.finish import run_finish_step
from flywheel.cycle.steps.select import plan_select_step
from flywheel.cycle.steps.select_merge import run_select_merge_step
from flywheel.cycle.steps.select_shard import run_select_shard
from flywheel.cycle.steps.train import run_train_step
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.pool_images import UnreadableSampleError
from flywheel.store.quarantine import list_quarantine, quarantined_among
from tests.flywheel.cycle.test_runner import ingest_digits
from tests.flywheel.cycle.test_select_shards import N_DIGITS, sharded
from tests.flywheel.store.test_quarantine import blob_file


def quarantine_reasons(ws) -> dict[str, tuple[str, int | None]]:
    rows, _ = list_quarantine(ws.db, limit=1000)
    return {q.sample_id: (q.reason, q.cycle_id) for q in rows}


def test_a_pool_image_lost_after_the_plan_is_quarantined_and_the_cycle_ends(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    ws = sharded(ws, 30)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    plan, data = plan_select_step(ws, registry, c1)
    assert data is not None and plan.shards >= 2
    shard = read_shard_ids(ws, c1, 1)
    deleted, corrupt = shard[3], shard[7]
    ws.blobs.delete(deleted)
    blob_file(ws, corrupt).write_bytes(b"\x89PNG not the stored bytes")

    # Shard 1 runs on "another worker": it reads its images, meets the two, and goes on.
    done = run_select_shard(ws, registry, c1, 1)
    assert done["samples"] == len(shard) - 2 and done["computed"] == [plan.embedder]
    reasons = quarantine_reasons(ws)
    assert reasons[deleted] == ("blob missing from the store", c1)
    assert reasons[corrupt] == ("blob does not match its checksum", c1)
    kept = [sid for sid in shard if sid not in (deleted, corrupt)]
    assert EmbeddingStore(ws.settings.storage_root).holds(plan.fingerprint, kept)
    # A redelivered copy knows the two are gone: nothing to compute, nothing read.
    assert run_select_shard(ws, registry, c1, 1) == {
        "shard": 1,
        "samples": len(kept),
        "computed": [],
    }

    for k in range(plan.shards):
        run_select_shard(ws, registry, c1, k)
    run_select_merge_step(ws, registry, c1)
    run_train_step(ws, registry, c1)
    result = run_finish_step(ws, registry, c1)
    assert result.metrics["pool"] == plan.pool - 2
    after = load_data(ws, c1, cycle_learning(load_cycle(ws, c1)))
    assert deleted not in after.pool_ids and corrupt not in after.pool_ids


def test_loading_a_cycle_reads_no_pool_image(ws, registry, monkeypatch) -> None:
    """A million-image pool is not read up front by one process: the cycle's data holds the
    human-labeled images, and the pool's are read when a step uses them."""
    ingest_digits(ws, N_DIGITS)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    read: list[str] = []
    get_many = type(ws.blobs).get_many

    def recording(self, shas, *args, **kwargs):
        shas = list(shas)
        read.extend(shas)
        return get_many(self, shas, *args, **kwargs)

    monkeypatch.setattr(type(ws.blobs), "get_many", recording)
    data = load_data(ws, c1, cycle_learning(load_cycle(ws, c1)))
    assert len(data.pool_ids) > 0 and read
    assert not set(read) & set(data.pool_ids)
    assert set(read) == set(data.labeled.ids) | set(data.test.ids)


def test_a_pool_image_lost_before_the_plan_is_quarantined_by_the_plan(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    pool = load_data(ws, c1, cycle_learning(load_cycle(ws, c1))).pool_ids
    ws.blobs.delete(pool[4])
    plan, data = plan_select_step(ws, registry, c1)  # SSL meets it, and plans again
    assert quarantine_reasons(ws) == {pool[4]: ("blob missing from the store", c1)}
    assert plan.pool == len(pool) - 1 and pool[4] not in data.pool_ids
    planned = [sid for k in range(plan.shards) for sid in read_shard_ids(ws, c1, k)]
    assert pool[4] not in planned


def test_the_eager_shard_reads_again_when_a_held_image_was_lost(ws, registry) -> None:
    """The eager path hands a shard the planned pool's lazy images; with no cache left, a
    lost one raises while embedding, and the shard checks its images itself."""
    ingest_digits(ws, N_DIGITS)
    ws = sharded(ws, 40)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    plan, data = plan_select_step(ws, registry, c1)
    assert data is not None
    start, end = plan.shard_bounds(0)
    held = data.pool_images[np.arange(start, end)]
    held._owner._cache.clear()  # as if evicted: the image must be read again
    ws.blobs.delete(held.ids[5])
    with pytest.raises(UnreadableSampleError, match=held.ids[5]):
        held[5]
    done = run_select_shard(ws, registry, c1, 0, held)
    assert done["samples"] == end - start - 1
    assert quarantined_among(ws.db, held.ids) == {held.ids[5]}


def test_the_train_step_runs_again_without_an_image_lost_while_it_trains(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    plan, _ = plan_select_step(ws, registry, c1)
    for k in range(plan.shards):
        run_select_shard(ws, registry, c1, k)
    run_select_merge_step(ws, registry, c1)
    lost = read_shard_ids(ws, c1, 0)[:2]
    for sid in lost:
        ws.blobs.delete(sid)
    out = run_train_step(ws, registry, c1)
    assert out["model_version"]
    assert set(quarantine_reasons(ws)) == set(lost)
    assert load_cycle(ws, c1).outputs["train"] == out


def test_a_step_that_keeps_losing_images_gives_up(ws, registry) -> None:
    """Samples that vanish on every run are not chased forever: after MAX_RUNS runs the
    step's own error is raised (and the cycle fails with it)."""
    ingest_digits(ws, N_DIGITS)
    c1 = start_cycle(ws, ws.settings.learning)
    learning = cycle_learning(load_cycle(ws, c1))
    runs = []

    def always_lost() -> None:
        runs.append(1)
        raise UnreadableSampleError("sample x: blob missing from the store", "x")

    with pytest.raises(UnreadableSampleError):
        run_without_lost_samples(ws, c1, learning, always_lost)
    assert len(runs) == MAX_RUNS
    assert run_without_lost_samples(ws, c1, learning, lambda: 7) == 7
