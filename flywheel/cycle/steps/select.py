"""Step 2 (GPU): SSL embedding, pseudo-label selection, labels written, a new dataset
version; output ``dataset_version_out``.

The labels and ``outputs["selection"]`` commit in one transaction
(:mod:`flywheel.cycle.label_writer`), and the accepted labels are also kept in the store
(:mod:`flywheel.cycle.artifacts`), so the next step trains on exactly what was selected.
The step fixes the model's input (size, channels, resize policy) as
``outputs["selection"]["input"]``. The strategy is ``learning.selection``, looked up in
:data:`flywheel.select.strategies.STRATEGIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from flywheel.config import LearningSettings
from flywheel.cycle.artifacts import save_selection
from flywheel.cycle.label_writer import write_selection
from flywheel.cycle.profile import resolve_profile
from flywheel.cycle.state import (
    Progress,
    Step,
    cycle_learning,
    finished_selection_rounds,
    load_cycle,
    load_data,
    reporter,
    update_cycle,
)
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError
from flywheel.learn.data import CycleData
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import choose_embedding
from flywheel.learn.pretrained import PretrainedStart
from flywheel.learn.recipe import (
    classifier_probs,
    pretrained_start,
    start_backbone,
    train_ssl_backbone,
)
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.snapshots import save_embeddings
from flywheel.learn.ssl.loop import SSLResult
from flywheel.select.outcome import SelectionOutcome, pseudo_label_quality
from flywheel.select.result import Decision
from flywheel.select.strategies import SelectionInputs, strategy
from flywheel.workspace import Workspace


def run_select_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> str:
    """Select pseudo-labels, write them, snapshot a dataset version; returns its id."""
    cycle = load_cycle(ws, cycle_id)
    if cycle.dataset_version_out is not None:
        return cycle.dataset_version_out
    step = reporter(ws, cycle_id, progress)
    if "selection" not in (cycle.outputs or {}):
        step(CycleState.EMBEDDING, 0.0, "deciding the data profile")
        resolve_profile(ws, cycle_id, cycle_learning(cycle))
        select_and_write(ws, registry, cycle_id, cycle_learning(load_cycle(ws, cycle_id)), step)
    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    version, _ = ws.versions.snapshot(f"cycle {cycle_id}")  # content-addressed: same id
    update_cycle(ws, cycle_id, dataset_version_out=version.id)
    return version.id


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
    return cycle_ssl(ws, load_data(ws, cycle_id, learning), learning, progress)[0]


def pool_probs_of(
    registry: ModelRegistry, version: str | None, loaded: dict[str, nn.Module], data: CycleData
) -> Callable[[], np.ndarray | None]:
    """The (n_pool, C) probabilities of model ``version`` (None: no such model), loading
    each model once per step."""

    def probs() -> np.ndarray | None:
        if version is None:
            return None
        if version not in loaded:
            loaded[version] = registry.load(version)
        return classifier_probs(loaded[version], data.pool_images, data.num_classes)

    return probs


def select_and_write(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    learning: LearningSettings,
    step: Step,
) -> None:
    step(CycleState.EMBEDDING, 0.0, "self-supervised embedding")
    data = load_data(ws, cycle_id, learning)
    champion, latest = registry.champion(), registry.latest()
    ssl, pretrained = cycle_ssl(
        ws,
        data,
        learning,
        lambda e, n, _: step(CycleState.EMBEDDING, 0.2 * e / n, f"SSL epoch {e}/{n}"),
    )
    # Only label-free embeddings compete: the champion's own features were trained on the
    # human labels, so a leave-one-out judge on those labels would always crown them.
    candidates: dict[str, nn.Module] = {"ssl": ssl.encoder} if ssl is not None else {}
    if ssl is None and pretrained is not None:  # no SSL: the pretrained features as they are
        candidates["pretrained"] = start_backbone(learning, data, None, pretrained)
    choice = choose_embedding(
        candidates,
        {"labeled": data.labeled.images, "pool": data.pool_images, "test": data.test.images},
        {"labeled": data.labeled.ids, "pool": data.pool_ids, "test": data.test.ids},
        data.labeled.labels,
        EmbeddingStore(ws.settings.storage_root),
    )
    save_embeddings(ws, cycle_id, choice, data)

    # Bootstrap (fixmatch "first"): with no model yet, FixMatch on the pool does better than
    # the agreement quota's pseudo-labels picked without a model's second opinion
    # (bench/LEARNING_NOTES.md). With consistency in every cycle, the first cycle selects
    # too: what calibration certifies is safe, and the review queue needs filling.
    bootstrap = champion is None and learning.fixmatch == "first"
    outcome: SelectionOutcome | None = None
    if bootstrap:
        step(CycleState.SELECTING, 0.25, "no champion yet: bootstrap on human labels + FixMatch")
        quality: dict[str, float | None] = {"pseudo_precision": None, "pseudo_coverage": 0.0}
    else:
        step(CycleState.SELECTING, 0.25, f"selecting pseudo-labels ({choice.name} embedding)")
        loaded: dict[str, nn.Module] = {}
        comparable = [m for m in (champion, latest) if m is not None and m.predicts(data.classes)]
        champion_v, latest_v = (m.version if m in comparable else None for m in (champion, latest))
        inputs = SelectionInputs(
            data,
            choice,
            learning,
            champion_probs=pool_probs_of(registry, champion_v, loaded, data),
            latest_probs=pool_probs_of(registry, latest_v, loaded, data),
            finished_rounds=lambda: finished_selection_rounds(ws),
        )
        outcome = strategy(learning.selection)(inputs)
        quality = pseudo_label_quality(data, outcome.result)

    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    save_selection(ws, cycle_id, data, outcome)
    summary = {
        "bootstrap": bootstrap,
        "embedding": choice.name,
        "embedding_scores": choice.scores,
        "pretrained": pretrained.summary() if pretrained is not None else None,
        "ssl": ssl.run if ssl is not None else None,
        "accepted": int((outcome.result.decision == Decision.ACCEPTED).sum()) if outcome else 0,
        "needs_review": int(outcome.result.counts["needs_review"]) if outcome else 0,
        "disputed_by_champion": int(outcome.result.counts.get("disputed_by_champion", 0))
        if outcome
        else 0,
        "calibration": outcome.calibration if outcome else "bootstrap (no selection)",
        "selection_round": None if bootstrap or outcome is None else outcome.selection_round,
        "pool": len(data.pool_ids),
        "input": data.input.as_dict() if data.input else None,
        **quality,
    }
    write_selection(ws, cycle_id, data, outcome, summary)
