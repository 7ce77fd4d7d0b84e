"""The select step fanned out over shards: the same selection whatever the shard size, each
shard idempotent and redone alone, a shard task that holds nothing but its ids.

Real SQLite, real MLflow store, real (tiny) torch models; a shard "on another worker" is
run with no images handed to it, so it reads its own from the blob store.
"""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.cycle.select_plan import (
    plan_of,
    planned_pool_index,
    read_embedder_file,
    read_shard_ids,
)
from flywheel.cycle.state import cycle_learning, load_cycle, start_cycle
from flywheel.cycle.steps.consensus import run_consensus_step
from flywheel.cycle.steps.select import plan_select_step, run_select_step
from flywheel.cycle.steps.select_merge import run_select_merge_step
from flywheel.cycle.steps.select_shard import run_select_shard
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.embedders import load_embedder
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.ssl.embed import embed
from flywheel.workspace import Workspace, open_workspace
from tests.flywheel.cycle.test_runner import TINY, ingest_digits

N_DIGITS = 200


def sharded(ws: Workspace, shard_size: int) -> Workspace:
    settings = ws.settings.model_copy(
        update={"cycles": ws.settings.cycles.model_copy(update={"shard_size": shard_size})}
    )
    return open_workspace(settings)


def selection_of(ws: Workspace, cycle_id: int) -> dict:
    out = dict(load_cycle(ws, cycle_id).outputs["selection"])
    out.pop("shards")
    return out


def test_the_selection_does_not_depend_on_the_shard_size(tmp_path) -> None:
    """One pool, cut into 1 shard or into 7: the same plan, vectors, labels and version."""
    results = []
    for shard_size in (10_000, 20):
        settings = Settings(
            data_dir=tmp_path / str(shard_size),
            learning=TINY,
            cycles={"shard_size": shard_size},
        )
        ws = open_workspace(settings)
        ingest_digits(ws, N_DIGITS)
        registry = ModelRegistry.from_settings(settings)
        learning = settings.learning.model_copy(update={"fixmatch": "first"})
        run_cycle(ws, registry, learning)  # a champion, so that cycle 2 selects with it
        second = run_cycle(ws, registry, learning)
        plan = plan_of(load_cycle(ws, second.cycle_id))
        assert plan is not None and plan.models  # the strategy's model scored every shard
        results.append((plan, selection_of(ws, second.cycle_id), second.dataset_version))
        ws.close()
    (one, sel_one, v_one), (many, sel_many, v_many) = results
    assert (one.shards, many.shards) == (1, -(-one.pool // 20))
    assert many.fingerprint == one.fingerprint and many.models == one.models
    assert sel_many == sel_one and v_many == v_one


def test_a_shard_is_done_once_and_a_lost_one_is_redone_alone(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    ws = sharded(ws, 25)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    plan, data = plan_select_step(ws, registry, c1)
    assert data is not None and plan.shards >= 3
    shards = [sid for shard in range(plan.shards) for sid in read_shard_ids(ws, c1, shard)]
    assert shards == data.pool_ids
    index = planned_pool_index(ws, c1, plan)
    assert len(index) == len(data.pool_ids) and index.contains(data.pool_ids).all()
    # Asked again, the plan is the recorded one, and nothing is planned anew.
    assert plan_select_step(ws, registry, c1) == (plan, None)

    # Every shard but #1 ran on "other workers" (no images handed over: read from blobs).
    done = [run_select_shard(ws, registry, c1, k) for k in range(plan.shards) if k != 1]
    assert all(d["computed"] == [plan.embedder] for d in done)
    with pytest.raises(NotFoundError, match="25 of"):  # the merge cannot go on without #1
        run_select_merge_step(ws, registry, c1)
    assert "selection" not in load_cycle(ws, c1).outputs

    # A redelivered copy of a finished shard computes nothing; the lost one is redone alone.
    assert run_select_shard(ws, registry, c1, 0)["computed"] == []
    assert run_select_shard(ws, registry, c1, 1)["computed"] == [plan.embedder]
    version = run_select_merge_step(ws, registry, c1)
    assert load_cycle(ws, c1).dataset_version_out == version
    with pytest.raises(InvalidInputError, match=r"has shards 0\.\."):
        run_select_shard(ws, registry, c1, plan.shards)


def test_a_shard_read_from_the_store_embeds_as_one_held_in_memory(ws, registry) -> None:
    """The embedder rebuilt from its file gives the planning module's vectors, and a shard
    that reads its images from the blob store the vectors of the decoded pool."""
    ingest_digits(ws, N_DIGITS)
    ws = sharded(ws, 50)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    plan, data = plan_select_step(ws, registry, c1)
    assert data is not None and plan.embedder in ("ssl", "pca")
    store = EmbeddingStore(ws.settings.storage_root)
    rebuilt = load_embedder(
        read_embedder_file(ws, c1), cycle_learning(load_cycle(ws, c1)), plan.spec
    )
    # The labeled vectors were embedded while planning, with the module itself.
    np.testing.assert_array_equal(
        embed(rebuilt, data.labeled.images), store.get(plan.fingerprint, data.labeled.ids)
    )
    assert run_select_shard(ws, registry, c1, 1)["computed"] == [plan.embedder]
    start, end = plan.shard_bounds(1)
    np.testing.assert_array_equal(
        store.get(plan.fingerprint, read_shard_ids(ws, c1, 1)),
        embed(rebuilt, data.pool_images[np.arange(start, end)]),
    )


def test_the_eager_select_step_runs_the_planned_shards(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    ws = sharded(ws, 40)
    c1 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c1)
    run_select_step(ws, registry, c1)
    cycle = load_cycle(ws, c1)
    plan = plan_of(cycle)
    assert plan is not None and cycle.outputs["selection"]["shards"] == plan.shards >= 2
    store = EmbeddingStore(ws.settings.storage_root)
    for k in range(plan.shards):
        assert store.holds(plan.fingerprint, read_shard_ids(ws, c1, k))
