"""The end of a select step: the pool's vectors and scores read back from the store, the
pseudo-labels selected and written, and a dataset version
(:mod:`flywheel.cycle.steps.select`). Runs once every shard of the plan is done."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flywheel.config import LearningSettings
from flywheel.cycle.artifacts import save_selection
from flywheel.cycle.label_writer import write_selection
from flywheel.cycle.memory import release_freed_memory
from flywheel.cycle.select_plan import SelectPlan, plan_of, read_embedder_file
from flywheel.cycle.state import (
    Progress,
    cycle_learning,
    finished_selection_rounds,
    load_cycle,
    load_data,
    reporter,
    update_cycle,
)
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.data import CycleData
from flywheel.learn.embedders import load_embedder
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import Embedder, EmbeddingChoice, embed_ids
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.snapshots import save_embeddings
from flywheel.select.outcome import SelectionOutcome, pseudo_label_quality
from flywheel.select.result import Decision
from flywheel.select.strategies import SelectionInputs, model_opinions, strategy
from flywheel.workspace import Workspace


def run_select_merge_step(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    progress: Progress | None = None,
    data: CycleData | None = None,
) -> str:
    """Select and write the labels (once), snapshot a dataset version; returns its id.
    ``data``: the cycle's data when the caller holds it (the plan's pool)."""
    cycle = load_cycle(ws, cycle_id)
    if cycle.dataset_version_out is not None:
        return cycle.dataset_version_out
    step = reporter(ws, cycle_id, progress)
    if "selection" not in (cycle.outputs or {}):
        release_freed_memory()  # the shards' freed batches: not the merge's to keep
        plan = plan_of(cycle)
        if plan is None:
            raise InvalidInputError(f"cycle {cycle_id} has no select plan: plan it first")
        learning = cycle_learning(cycle)
        data = data if data is not None else load_data(ws, cycle_id, learning)
        select_and_write(ws, cycle_id, plan, data, learning, step)
    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    version, _ = ws.versions.snapshot(f"cycle {cycle_id}")  # content-addressed: same id
    update_cycle(ws, cycle_id, dataset_version_out=version.id)
    return version.id


def planned_choice(
    ws: Workspace,
    cycle_id: int,
    plan: SelectPlan,
    data: CycleData,
    learning: LearningSettings,
    with_pool: bool = True,
) -> EmbeddingChoice:
    """The plan's embedding of ``data``, from the store, read in one pass over its shards. A
    sample labeled by a person since the plan was made is in no shard and not among the
    labeled it embedded: such few are embedded now. ``with_pool=False``: the pool's
    vectors are not read (``pool`` is empty): a bootstrap selects nothing."""
    store = EmbeddingStore(ws.settings.storage_root)
    pool_ids = data.pool_ids if with_pool else []
    parts = (data.labeled.ids, pool_ids, data.test.ids)
    try:
        labeled, pool, test = store.get_parts(plan.fingerprint, parts)
    except NotFoundError:
        module = load_embedder(read_embedder_file(ws, cycle_id), learning, plan.spec)
        embedder = Embedder(plan.embedder, module, plan.fingerprint)
        labeled = embed_ids(store, embedder, data.labeled.ids, data.labeled.images)
        # the shards' own: never redone here
        pool = store.get(plan.fingerprint, pool_ids) if pool_ids else labeled[:0]
        test = embed_ids(store, embedder, data.test.ids, data.test.images)
    return EmbeddingChoice(plan.embedder, plan.fingerprint, labeled, pool, test, plan.scores)


def stored_opinion(
    ws: Workspace, plan: SelectPlan, role: str, data: CycleData
) -> Callable[[], np.ndarray | None]:
    """The (n_pool, C) probabilities the shards stored for ``role``'s model (None: no such
    model, or one that predicts other classes)."""

    def probs() -> np.ndarray | None:
        version = plan.models.get(role)
        if version is None or not data.pool_ids:
            return None
        store = EmbeddingStore(ws.settings.storage_root)
        return store.get(plan.probs_fingerprint(version), data.pool_ids)

    return probs


def select_and_write(
    ws: Workspace,
    cycle_id: int,
    plan: SelectPlan,
    data: CycleData,
    learning: LearningSettings,
    step: Callable,
) -> None:
    if list(data.classes) != plan.classes:
        raise InvalidInputError(
            f"the classes changed since the plan ({plan.classes} -> {data.classes}): "
            "run the cycle again"
        )
    # A bootstrap selects nothing: the pool's vectors go from the store to the artifact
    # shard by shard, never all in memory.
    choice = planned_choice(ws, cycle_id, plan, data, learning, with_pool=not plan.bootstrap)
    store = EmbeddingStore(ws.settings.storage_root)
    streamed = store.rows(plan.fingerprint, data.pool_ids) if plan.bootstrap else None
    save_embeddings(ws, cycle_id, choice, data, pool=streamed)
    outcome: SelectionOutcome | None = None
    if plan.bootstrap:
        step(CycleState.SELECTING, 0.25, "no champion yet: bootstrap on human labels + FixMatch")
        quality: dict[str, float | None] = {"pseudo_precision": None, "pseudo_coverage": 0.0}
    else:
        step(CycleState.SELECTING, 0.25, f"selecting pseudo-labels ({choice.name} embedding)")
        inputs = SelectionInputs(
            data,
            choice,
            learning,
            champion_probs=stored_opinion(ws, plan, "champion", data),
            latest_probs=stored_opinion(ws, plan, "latest", data),
            finished_rounds=lambda: finished_selection_rounds(ws),
        )
        outcome = strategy(learning.selection)(inputs)
        outcome.embedding_fingerprint = choice.fingerprint
        # The model whose opinion the strategy used (the first of its roles the plan scored).
        roles = [r for r in model_opinions(learning.selection) if r in plan.models]
        outcome.model_version = plan.models[roles[0]] if roles else None
        quality = pseudo_label_quality(data, outcome.result)

    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    save_selection(ws, cycle_id, data, outcome)
    result = outcome.result if outcome is not None else None
    summary = {
        "bootstrap": plan.bootstrap,
        "embedding": choice.name,
        "embedding_scores": choice.scores,
        "pretrained": plan.pretrained,
        "ssl": plan.ssl,
        "accepted": int((result.decision == Decision.ACCEPTED).sum()) if result else 0,
        "needs_review": int(result.counts["needs_review"]) if result else 0,
        "disputed_by_champion": int(result.counts.get("disputed_by_champion", 0)) if result else 0,
        "calibration": outcome.calibration if outcome else "bootstrap (no selection)",
        "selection_round": None if outcome is None else outcome.selection_round,
        "pool": len(data.pool_ids),
        "shards": plan.shards,
        "input": data.input.as_dict() if data.input else None,
        **quality,
    }
    write_selection(ws, cycle_id, data, outcome, summary)
