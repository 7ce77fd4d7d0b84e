"""Step 2 (GPU): SSL embedding, pseudo-label selection, labels written, a new dataset
version; output ``dataset_version_out``.

The step runs in three parts, so that a pool of millions is spread over workers:

1. **plan** (:func:`plan_select_step`, one task): the data profile, the SSL model, the
   embedding candidates judged on the human labels, and a plan
   (:mod:`flywheel.cycle.select_plan`) that splits the pool into ``cycles.shard_size`` shards;
2. **shards** (:func:`flywheel.cycle.steps.select_shard.run_select_shard`, one task per
   shard, on any number of GPU workers at once): each embeds its shard and scores it with
   the models the strategy asks for, into the embedding store;
3. **merge** (:func:`flywheel.cycle.steps.select_merge.run_select_merge_step`, one task):
   selects from the stored vectors, writes the labels and a dataset version.

:func:`run_select_step` runs the three here, one after another (the embedded default); the
workers run the shards as a Celery chord. The labels and ``outputs["selection"]`` commit in
one transaction, and the step fixes the model's input as ``outputs["selection"]["input"]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from torch import nn

from flywheel.config import LearningSettings
from flywheel.cycle.lost_samples import run_without_lost_samples
from flywheel.cycle.profile import resolve_profile
from flywheel.cycle.select_plan import (
    SELECT_PLAN,
    SelectPlan,
    plan_of,
    write_plan_files,
)
from flywheel.cycle.state import (
    Progress,
    Step,
    cycle_learning,
    load_cycle,
    load_data,
    record_output,
    reporter,
)
from flywheel.cycle.steps.select_merge import run_select_merge_step
from flywheel.cycle.steps.select_shard import run_select_shard
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError
from flywheel.learn.data import CycleData
from flywheel.learn.embedders import PRETRAINED, SSL, embedder_bytes
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import embed_ids, embedders, judge_embedders
from flywheel.learn.pool_images import BlobImages
from flywheel.learn.pretrained import PretrainedStart
from flywheel.learn.recipe import pretrained_start, start_backbone, train_ssl_backbone
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.ssl.loop import SSLResult
from flywheel.select.strategies import model_opinions
from flywheel.workspace import Workspace


def run_select_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> str:
    """Plan, embed every shard, merge: all here. Returns the new dataset version's id."""
    cycle = load_cycle(ws, cycle_id)
    if cycle.dataset_version_out is None and "selection" not in (cycle.outputs or {}):
        plan, data = plan_select_step(ws, registry, cycle_id, progress)
        for shard in range(plan.shards):
            # The planned pool, decoded once: its cache serves every shard.
            images = None
            if data is not None:
                start, end = plan.shard_bounds(shard)
                images = data.pool_images[np.arange(start, end)]
            run_select_shard(ws, registry, cycle_id, shard, images, progress)
        if data is not None and isinstance(data.pool_images, BlobImages):
            data.pool_images.drop_cache()  # the merge reads no pool image
        return run_select_merge_step(ws, registry, cycle_id, progress, data)
    return run_select_merge_step(ws, registry, cycle_id, progress)


def plan_select_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> tuple[SelectPlan, CycleData | None]:
    """The cycle's plan (recorded once; a retry returns it) and, when made now, the data it
    was made from (None when it was recorded before)."""
    cycle = load_cycle(ws, cycle_id)
    plan = plan_of(cycle)
    if plan is not None:
        return plan, None
    step = reporter(ws, cycle_id, progress)
    step(CycleState.EMBEDDING, 0.0, "deciding the data profile")
    resolve_profile(ws, cycle_id, cycle_learning(cycle))
    learning = cycle_learning(load_cycle(ws, cycle_id))

    def make() -> tuple[SelectPlan, bytes, CycleData]:
        step(CycleState.EMBEDDING, 0.0, "self-supervised embedding")
        data = load_data(ws, cycle_id, learning)
        return *make_plan(ws, registry, data, learning, step), data

    # SSL reads the pool as it trains: a pool image lost meanwhile is quarantined, and
    # the plan is made again without it.
    plan, embedder, data = run_without_lost_samples(ws, cycle_id, learning, make)
    write_plan_files(ws, cycle_id, plan, data.pool_ids, embedder)
    record_output(ws, cycle_id, SELECT_PLAN, asdict(plan))
    return plan, data


def make_plan(
    ws: Workspace, registry: ModelRegistry, data: CycleData, learning: LearningSettings, step: Step
) -> tuple[SelectPlan, bytes]:
    """The plan for ``data``, and the chosen embedder's file."""
    champion, latest = registry.champion(), registry.latest()
    ssl, pretrained = cycle_ssl(
        ws,
        data,
        learning,
        lambda e, n, _: step(CycleState.EMBEDDING, 0.2 * e / n, f"SSL epoch {e}/{n}"),
    )
    # Only label-free embeddings compete: the champion's own features were trained on the
    # human labels, so a leave-one-out judge on those labels would always crown them.
    candidates: dict[str, nn.Module] = {SSL: ssl.encoder} if ssl is not None else {}
    if ssl is None and pretrained is not None:  # no SSL: the pretrained features as they are
        candidates[PRETRAINED] = start_backbone(learning, data, None, pretrained)
    store = EmbeddingStore(ws.settings.storage_root)
    step(CycleState.EMBEDDING, 0.2, "judging the embeddings on the human labels")
    options = embedders(candidates, data.pool_images, data.labeled.images)
    labeled = {e.name: embed_ids(store, e, data.labeled.ids, data.labeled.images) for e in options}
    best_name, scores = judge_embedders(labeled, data.labeled.labels)
    best = next(e for e in options if e.name == best_name)
    embed_ids(store, best, data.test.ids, data.test.images)  # few: embedded with the plan

    # Bootstrap (fixmatch "first"): with no model yet, FixMatch on the pool does better than
    # the agreement quota's pseudo-labels picked without a model's second opinion
    # (bench/LEARNING_NOTES.md). With consistency in every cycle, the first cycle selects
    # too: what calibration certifies is safe, and the review queue needs filling.
    bootstrap = champion is None and learning.fixmatch == "first"
    models = {
        role: model.version
        for role, model in (("champion", champion), ("latest", latest))
        if not bootstrap
        and role in model_opinions(learning.selection)
        and model is not None
        and model.predicts(data.classes)
    }
    shard_size = ws.settings.cycles.shard_size
    plan = SelectPlan(
        embedder=best.name,
        fingerprint=best.fingerprint,
        scores=scores,
        shard_size=shard_size,
        shards=math.ceil(len(data.pool_ids) / shard_size),
        pool=len(data.pool_ids),
        input=data.input.as_dict() if data.input else {},
        classes=list(data.classes),
        models=models,
        bootstrap=bootstrap,
        ssl=ssl.run if ssl is not None else None,
        pretrained=pretrained.summary() if pretrained is not None else None,
    )
    return plan, embedder_bytes(best.name, best.module)


def cycle_ssl(
    ws: Workspace,
    data: CycleData,
    learning: LearningSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[SSLResult | None, PretrainedStart | None]:
    """The cycle's SSL model (from its pretrained start, when set), in the shared cache."""
    pretrained = pretrained_start(learning, data, ws.blobs)
    cache = Path(ws.settings.data_dir) / "cache" / "ssl"
    return train_ssl_backbone(data, learning, cache, progress, pretrained), pretrained


def run_ssl_step(
    ws: Workspace, cycle_id: int, progress: Callable[[int, int, float], None] | None = None
) -> SSLResult | None:
    """Train cycle ``cycle_id``'s SSL model ahead of its select step, which then finds it
    finished. Run by every process of a torchrun launch, it trains with DDP on all of them
    (``flywheel cycle ssl``): the way to put a node's GPUs on one cycle's embedding."""
    cycle = load_cycle(ws, cycle_id)
    if cycle.state not in (CycleState.QUEUED.value, CycleState.EMBEDDING.value):
        raise InvalidInputError(f"cycle {cycle_id} is {cycle.state}: its SSL model is trained")
    resolve_profile(ws, cycle_id, cycle_learning(cycle))
    learning = cycle_learning(load_cycle(ws, cycle_id))
    return run_without_lost_samples(
        ws,
        cycle_id,
        learning,
        lambda: cycle_ssl(ws, load_data(ws, cycle_id, learning), learning, progress)[0],
    )
