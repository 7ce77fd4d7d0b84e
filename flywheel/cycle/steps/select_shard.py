"""One shard of a select step's pool: embedded with the planned embedder and scored by the
planned models, into the embedding store (:mod:`flywheel.cycle.steps.select`).

A shard task reads only its plan, its ids, the embedder's file and its own images, so any
GPU worker can run any shard, and many at once. It is idempotent: its outputs are named by
the ids they hold (``EmbeddingStore.holds``), so a shard already done returns at once, and a
shard whose worker was killed is redone alone, by whichever worker gets it next. An image
lost since the plan (deleted or corrupted in the store) is quarantined and the shard goes on
without it (:mod:`flywheel.cycle.lost_samples`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.config import LearningSettings
from flywheel.cycle.lost_samples import checked_shard_images
from flywheel.cycle.select_plan import (
    SelectPlan,
    plan_of,
    read_embedder_file,
    read_shard_ids,
)
from flywheel.cycle.state import Progress, cycle_learning, load_cycle, reporter
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError
from flywheel.learn.embedders import load_embedder
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.pool_images import ImageSource, UnreadableSampleError
from flywheel.learn.recipe import classifier_probs
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.ssl.embed import embed
from flywheel.store import quarantine
from flywheel.workspace import Workspace


def run_select_shard(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    shard: int,
    images: ImageSource | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed and score shard ``shard`` of cycle ``cycle_id``'s plan; ``images``: its images
    when the caller holds them (else they are read from the blob store). Returns what was
    computed now (nothing when a copy of the task already did it). The cycle's message
    says which shard ended last (shards end in any order on several workers)."""
    cycle = load_cycle(ws, cycle_id)
    plan = plan_of(cycle)
    if plan is None:
        raise InvalidInputError(f"cycle {cycle_id} has no select plan: plan it first")
    plan.shard_bounds(shard)  # a shard the plan has
    if "selection" in (cycle.outputs or {}):  # a late copy: the merge already selected
        return {"shard": shard, "samples": 0, "computed": []}
    ids = read_shard_ids(ws, cycle_id, shard)
    lost = quarantine.quarantined_among(ws.db, ids)  # by an earlier run of this shard
    ids = [sid for sid in ids if sid not in lost]
    step = reporter(ws, cycle_id, progress)
    learning = cycle_learning(cycle)
    computed: list[str] | None = None
    if images is not None and len(images) == len(ids):
        try:  # the caller's images (the eager path), checked when the pool was planned
            computed = compute(ws, registry, cycle_id, plan, learning, ids, images)
        except UnreadableSampleError:  # one was lost since: read and check them all below
            computed = None
    if computed is None:
        computed = []
        todo = missing_outputs(ws, plan, ids)
        if todo:
            cache = learning.pool_cache_mb << 20
            images = checked_shard_images(ws, cycle_id, ids, plan.spec, cache)
            # The same ids less the lost: their outputs are all still to write.
            ids = images.ids
            computed = compute(ws, registry, cycle_id, plan, learning, ids, images, todo)
    fraction = 0.2 + 0.05 * (shard + 1) / plan.shards
    done = f"pool shard {shard + 1}/{plan.shards} embedded ({plan.embedder})"
    step(CycleState.EMBEDDING, fraction, done)
    return {"shard": shard, "samples": len(ids), "computed": computed}


def missing_outputs(ws: Workspace, plan: SelectPlan, ids: list[str]) -> list[str]:
    """The store keys the shard of ``ids`` has yet to write: the plan's embedding, and the
    pool probabilities of each model the plan scores with."""
    store = EmbeddingStore(ws.settings.storage_root)
    scored = [plan.probs_fingerprint(v) for v in sorted(set(plan.models.values()))]
    return [fp for fp in (plan.fingerprint, *scored) if ids and not store.holds(fp, ids)]


def compute(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    plan: SelectPlan,
    learning: LearningSettings,
    ids: list[str],
    images: ImageSource,
    todo: list[str] | None = None,
) -> list[str]:
    """Write what the store lacks for the shard of ``ids`` (``todo``: those store keys, when
    the caller has just looked); returns what was computed."""
    todo = missing_outputs(ws, plan, ids) if todo is None else todo
    store = EmbeddingStore(ws.settings.storage_root)
    computed = []
    if plan.fingerprint in todo:
        module = load_embedder(read_embedder_file(ws, cycle_id), learning, plan.spec)
        store.put(plan.fingerprint, ids, embed(module, images))
        computed.append(plan.embedder)
    for version in sorted(set(plan.models.values())):
        if plan.probs_fingerprint(version) in todo:
            probs = classifier_probs(registry.load(version), images, len(plan.classes))
            store.put(plan.probs_fingerprint(version), ids, np.asarray(probs, dtype=np.float32))
            computed.append(f"model {version}")
    return computed
