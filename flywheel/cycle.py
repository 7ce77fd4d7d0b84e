"""One turn of the wheel: embed -> select -> version -> train -> evaluate -> gate -> promote.

``run_cycle`` records every step in the cycles table (state, step, progress) so the CLI,
the API and the workers all see the same truth, and logs the cycle as one MLflow run.
Each step is a plain function below; the orchestration only moves values between them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from flywheel.config import LearningSettings
from flywheel.consensus import CONFLICT_REASON, resolve_feedback
from flywheel.cycle_data import CycleData, load_cycle_data
from flywheel.db import Cycle, Label, ReviewItem
from flywheel.db.models import CycleState, LabelSource, ReviewState, utcnow
from flywheel.embedding_index import save_index
from flywheel.embeddings import EmbeddingCache, choose_embedding
from flywheel.gate import GateConfig, GateDecision, decide_promotion
from flywheel.learning import (
    SelectionOutcome,
    classifier_probs,
    embedding_classifier_probs,
    fit_classifier,
    pseudo_label_quality,
    select_by_model_agreement,
    select_for_cycle,
    train_ssl_backbone,
)
from flywheel.plots import confusion_matrix_png
from flywheel.registry import ModelRegistry
from flywheel.selection import Decision
from flywheel.training import EvalResult, evaluate
from flywheel.workspace import Workspace

# step name, fraction of the cycle done when it starts: drives the progress bar
Progress = Callable[[str, float, str], None]
PSEUDO_METHOD = "knn+classifier"


@dataclass
class CycleResult:
    cycle_id: int
    state: str  # promoted | rejected
    dataset_version: str
    model_version: str
    gate: GateDecision
    metrics: dict[str, Any] = field(default_factory=dict)


def _update(ws: Workspace, cycle_id: int, **fields: Any) -> None:
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        assert cycle is not None
        for key, value in fields.items():
            setattr(cycle, key, value)


def _finished_selection_rounds(ws: Workspace) -> int:
    """How many earlier cycles selected pseudo-labels: drives the agreement quota."""
    with ws.db.session() as s:
        metrics = s.scalars(
            select(Cycle.metrics).where(
                Cycle.state.in_([CycleState.PROMOTED.value, CycleState.REJECTED.value])
            )
        ).all()
    return sum(1 for m in metrics if (m or {}).get("selection_round") is not None)


def start_cycle(ws: Workspace, learning: LearningSettings) -> int:
    with ws.db.session() as s:
        cycle = Cycle(state=CycleState.QUEUED.value, params=learning.model_dump(), progress=0.0)
        s.add(cycle)
        s.flush()
        return cycle.id


def write_selection(
    ws: Workspace, cycle_id: int, data: CycleData, outcome: SelectionOutcome
) -> dict[str, int]:
    """Pseudo-labels and review items for this cycle; history is never rewritten.

    An accepted sample gets a new ``pseudo`` label unless its current pseudo-label already
    says the same; a pseudo-labeled sample that is no longer accepted gets a retraction.
    """
    res = outcome.result
    counts = {"new": 0, "kept": 0, "retracted": 0, "review": 0}
    labels: list[Label] = []
    reviews: list[ReviewItem] = []
    for i, sid in enumerate(data.pool_ids):
        decision = int(res.decision[i])
        name = data.classes[int(res.label[i])]
        current = data.pool_current.get(sid)
        evidence = outcome.evidence(i)
        if decision == Decision.ACCEPTED:
            if current is not None and current[0] == name:
                counts["kept"] += 1
                continue
            labels.append(
                Label(
                    sample_id=sid,
                    label=name,
                    source=LabelSource.PSEUDO.value,
                    confidence=float(res.score[i]),
                    method=PSEUDO_METHOD,
                    cycle_id=cycle_id,
                    evidence=evidence,
                )
            )
            counts["new"] += 1
        elif current is not None:
            labels.append(
                Label(
                    sample_id=sid,
                    label=current[0],
                    source=LabelSource.PSEUDO.value,
                    confidence=0.0,
                    method=PSEUDO_METHOD,
                    cycle_id=cycle_id,
                    evidence=evidence,
                    retracted=True,
                )
            )
            counts["retracted"] += 1
        if decision == Decision.NEEDS_REVIEW:
            reviews.append(
                ReviewItem(
                    sample_id=sid,
                    cycle_id=cycle_id,
                    reason="uncertain",
                    proposed_label=name,
                    score=float(res.score[i]),
                    evidence=evidence,
                )
            )
            counts["review"] += 1
    with ws.db.session() as s:
        queued = [r.sample_id for r in reviews]
        # A sample sits in the queue once. The newest cycle's evidence replaces an older
        # cycle's; an open feedback conflict (users' votes) stays and the cycle's is dropped.
        conflicted: set[str] = set()
        if queued:
            for old in s.scalars(
                select(ReviewItem).where(
                    ReviewItem.state == ReviewState.OPEN.value, ReviewItem.sample_id.in_(queued)
                )
            ):
                if old.reason == CONFLICT_REASON:
                    conflicted.add(old.sample_id)
                else:
                    old.state = ReviewState.SUPERSEDED.value
                    old.decided_at = utcnow()
        kept = [r for r in reviews if r.sample_id not in conflicted]
        counts["review"] -= len(reviews) - len(kept)
        s.add_all(labels + kept)
    return counts


def run_cycle(
    ws: Workspace,
    registry: ModelRegistry,
    learning: LearningSettings,
    progress: Progress | None = None,
    cycle_id: int | None = None,
) -> CycleResult:
    """Run one full cycle; on any error the cycle is marked ``failed`` with the reason."""
    cycle_id = cycle_id if cycle_id is not None else start_cycle(ws, learning)

    def step(state: CycleState, fraction: float, message: str) -> None:
        _update(ws, cycle_id, state=state.value, step=state.value, progress=fraction)
        if progress:
            progress(state.value, fraction, message)

    try:
        return _run(ws, registry, learning, cycle_id, step)
    except BaseException as exc:
        _update(ws, cycle_id, state=CycleState.FAILED.value, error=f"{type(exc).__name__}: {exc}")
        raise


def _run(
    ws: Workspace,
    registry: ModelRegistry,
    learning: LearningSettings,
    cycle_id: int,
    step: Callable[[CycleState, float, str], None],
) -> CycleResult:
    data_dir = Path(ws.settings.data_dir)
    versions_before = ws.versions.list()
    version_in = versions_before[-1].id if versions_before else None
    _update(ws, cycle_id, dataset_version_in=version_in)

    step(CycleState.EMBEDDING, 0.0, "self-supervised embedding")
    # Users' feedback becomes labels (or review items) before the cycle reads its labels.
    feedback = resolve_feedback(ws.db, ws.settings.consensus)
    data = load_cycle_data(ws.db, ws.blobs, learning.image_size, learning.channels)
    champion = registry.champion()
    champion_model = registry.load(champion.version) if champion else None
    latest = registry.latest()
    latest_model = (
        champion_model
        if latest is None or (champion is not None and latest.version == champion.version)
        else registry.load(latest.version)
    )
    ssl = train_ssl_backbone(
        data,
        learning,
        data_dir / "cache" / "ssl",
        lambda e, n, _: step(CycleState.EMBEDDING, 0.2 * e / n, f"SSL epoch {e}/{n}"),
    )
    # Only label-free embeddings compete: the champion's own features were trained on the
    # human labels, so a leave-one-out judge on those labels would always crown them.
    candidates = {"ssl": ssl.encoder} if ssl is not None else {}
    comparable = champion is not None and champion.tags.get("classes") == ",".join(data.classes)
    choice = choose_embedding(
        candidates,
        {"labeled": data.labeled.images, "pool": data.pool_images, "test": data.test.images},
        {"labeled": data.labeled.ids, "pool": data.pool_ids, "test": data.test.ids},
        data.labeled.labels,
        EmbeddingCache(data_dir / "cache" / "embeddings"),
    )

    # Bootstrap: with no model yet, FixMatch on the pool does better than pseudo-labels
    # picked without a model's second opinion (bench/LEARNING_NOTES.md).
    bootstrap = champion is None and learning.fixmatch == "first"
    outcome: SelectionOutcome | None = None
    selection_round = 0
    if bootstrap:
        step(CycleState.SELECTING, 0.25, "no champion yet: bootstrap on human labels + FixMatch")
        accepted = np.zeros(len(data.pool_ids), dtype=bool)
        quality: dict[str, float | None] = {"pseudo_precision": None, "pseudo_coverage": 0.0}
    else:
        step(CycleState.SELECTING, 0.25, f"selecting pseudo-labels ({choice.name} embedding)")
        if learning.selection == "agreement":
            # The newest model, promoted or not, is the best opinion on the pool: it was
            # trained on the most labels. The gate still decides what is served.
            usable = latest is not None and latest.tags.get("classes") == ",".join(data.classes)
            model_probs = (
                classifier_probs(latest_model, data.pool_images, data.num_classes)
                if usable
                else embedding_classifier_probs(data, choice)
            )
            selection_round = _finished_selection_rounds(ws)
            outcome = select_by_model_agreement(
                data, choice, learning, model_probs, selection_round
            )
        else:
            champion_probs = (
                classifier_probs(champion_model, data.pool_images, data.num_classes)
                if comparable
                else None
            )
            outcome = select_for_cycle(data, choice, learning, champion_probs)
        accepted = outcome.result.decision == Decision.ACCEPTED
        quality = pseudo_label_quality(data, outcome.result)

    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    written = write_selection(ws, cycle_id, data, outcome) if outcome is not None else {}
    version, _ = ws.versions.snapshot(f"cycle {cycle_id}")
    _update(ws, cycle_id, dataset_version_out=version.id)

    step(CycleState.TRAINING, 0.5, "training the classifier")
    run_params = {
        **learning.model_dump(),
        "cycle_id": cycle_id,
        "dataset_version": version.id,
        "embedding": choice.name,
    }
    with registry.run(f"cycle-{cycle_id}", run_params, {"dataset_version": version.id}) as run_id:
        _update(ws, cycle_id, mlflow_run_id=run_id)
        registry.log_dict(
            {"dataset_version": version.id, "parent": version.parent_id, "stats": version.stats},
            "dataset_version.json",
        )

        def on_epoch(epoch: int, epochs: int, loss: float) -> None:
            registry.log_metrics({"train_loss": loss}, step=epoch)
            step(CycleState.TRAINING, 0.5 + 0.35 * epoch / epochs, f"epoch {epoch}/{epochs}")

        trained = fit_classifier(
            data,
            accepted,
            outcome.result.label[accepted] if outcome else np.zeros(0, dtype=np.int64),
            outcome.result.score[accepted] if outcome else np.zeros(0, dtype=np.float32),
            learning,
            ssl.backbone if ssl is not None else None,
            fixmatch=learning.fixmatch == "all" or bootstrap,
            # A new seed per cycle: a rejected cycle is not simply repeated by the next one.
            seed=learning.seed + cycle_id,
            on_epoch=on_epoch,
        )

        step(CycleState.EVALUATING, 0.85, "evaluating on the frozen test split")
        candidate_eval = evaluate(
            classifier_probs(trained.model, data.test.images, data.num_classes),
            data.test.labels,
            data.num_classes,
        )
        champion_eval: EvalResult | None = None
        if comparable:
            champion_eval = evaluate(
                classifier_probs(champion_model, data.test.images, data.num_classes),
                data.test.labels,
                data.num_classes,
            )
        gate = decide_promotion(
            candidate_eval,
            champion_eval,
            GateConfig(learning.gate_margin, learning.gate_per_class_tolerance),
        )
        metrics: dict[str, Any] = {
            "test_accuracy": candidate_eval.accuracy,
            "test_ece": candidate_eval.ece,
            "champion_accuracy": champion_eval.accuracy if champion_eval else None,
            "embedding": choice.name,
            "embedding_scores": choice.scores,
            "accepted": int(accepted.sum()),
            "needs_review": int(outcome.result.counts["needs_review"]) if outcome else 0,
            "disputed_by_champion": int(outcome.result.counts.get("disputed_by_champion", 0))
            if outcome
            else 0,
            "calibration": outcome.calibration if outcome else "bootstrap (no selection)",
            "selection_round": None if bootstrap else selection_round,
            "pool": len(data.pool_ids),
            "labels_written": written,
            "feedback_labels": feedback.labels_written,
            "feedback_review": feedback.review_opened + feedback.review_updated,
            "labels_by_source": version.stats["by_source"],
            **quality,
        }
        registry.log_metrics(
            {k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
        )
        per_class = zip(data.classes, candidate_eval.per_class_accuracy, strict=True)
        registry.log_metrics({f"test_accuracy_class_{c}": a or 0.0 for c, a in per_class})
        registry.log_dict({"gate": gate.as_dict(), "metrics": metrics}, "gate.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = confusion_matrix_png(
                candidate_eval.confusion, data.classes, Path(tmp) / "confusion_matrix.png"
            )
            registry.log_artifact(png)
            if outcome is not None and outcome.index is not None:
                registry.log_artifact(save_index(outcome.index, Path(tmp) / "anchors.faiss"))
        model_version = registry.log_model(
            trained.model,
            {
                "cycle_id": str(cycle_id),
                "dataset_version": version.id,
                "classes": ",".join(data.classes),
                "test_accuracy": f"{candidate_eval.accuracy:.4f}",
            },
        )
    if gate.promote:
        registry.promote(model_version.version, gate.reason)
    state = CycleState.PROMOTED if gate.promote else CycleState.REJECTED
    metrics["model_version"] = model_version.version
    metrics["gate"] = gate.as_dict()
    _update(ws, cycle_id, state=state.value, step=state.value, progress=1.0, metrics=metrics)
    return CycleResult(cycle_id, state.value, version.id, model_version.version, gate, metrics)
