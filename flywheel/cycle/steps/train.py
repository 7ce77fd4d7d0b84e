"""Step 3 (GPU): the classifier trained on the cycle's dataset version, evaluated on the
frozen test split, gated against the champion and registered in MLflow; output the model
version tagged with the cycle id, then ``outputs["train"]``."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
from torch import nn

from flywheel.config import LearningSettings
from flywheel.cycle.artifacts import load_anchor_index, load_selection
from flywheel.cycle.lost_samples import run_without_lost_samples
from flywheel.cycle.memory import release_freed_memory
from flywheel.cycle.select_plan import plan_of
from flywheel.cycle.state import (
    PROFILE,
    Progress,
    Step,
    cycle_learning,
    load_cycle,
    load_data,
    record_output,
    reporter,
    update_cycle,
)
from flywheel.datasets.versions import VersionInfo
from flywheel.db.models import CycleState
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.insights.plots import confusion_matrix_png
from flywheel.learn.backbones import Classifier, build_backbone
from flywheel.learn.data import CycleData, ModelInput
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.gate import GateConfig, GateDecision, decide_promotion
from flywheel.learn.recipe import (
    channels_of,
    classifier_probs,
    fit_classifier,
    pretrained_start,
    start_backbone,
    stem_stride,
    train_ssl_backbone,
)
from flywheel.learn.registry import DATASET_VERSION_TAG, ModelRegistry, ModelVersion, classes_tag
from flywheel.learn.ssl.embed import embed
from flywheel.learn.ssl.lineage import SSLRun
from flywheel.learn.training import EvalResult, evaluate
from flywheel.select.teacher import PoolTeacher, propagation_teacher, teacher_rule
from flywheel.workspace import Workspace


@dataclass(frozen=True)
class Judgement:
    candidate: EvalResult
    incumbent: EvalResult | None  # the champion on the same test split, if comparable
    gate: GateDecision


def model_of_cycle(registry: ModelRegistry, cycle_id: int) -> ModelVersion | None:
    """The registered model a cycle produced, if its train step got that far."""
    mine = [v for v in registry.versions() if v.tags.get("cycle_id") == str(cycle_id)]
    return mine[0] if mine else None


def judge(
    model: nn.Module, champion: nn.Module | None, data: CycleData, learning: LearningSettings
) -> Judgement:
    """The candidate and the champion on the frozen test split, and the gate's decision."""

    def on_test(m: nn.Module) -> EvalResult:
        probs = classifier_probs(m, data.test.images, data.num_classes)
        return evaluate(probs, data.test.labels, data.num_classes)

    candidate = on_test(model)
    incumbent = on_test(champion) if champion is not None else None
    gate = decide_promotion(
        candidate, incumbent, GateConfig(learning.gate_margin, learning.gate_per_class_tolerance)
    )
    return Judgement(candidate, incumbent, gate)


def warm_start_model(
    champion: ModelVersion | None,
    champion_model: nn.Module | None,
    data: CycleData,
    learning: LearningSettings,
) -> nn.Module | None:
    """The champion to continue training from, when ``learning.warm_start`` and it takes
    this cycle's classes and input; None: start from the SSL backbone."""
    if not learning.warm_start or champion is None or champion_model is None:
        return None
    if not isinstance(champion_model, Classifier) or not champion.predicts(data.classes):
        return None
    if ModelInput.from_dict(champion.tags) != data.input:
        return None
    # Same architecture (backbone, width, stem): every weight fits the cycle's new model.
    fresh = Classifier(
        build_backbone(
            learning.backbone, channels_of(data, learning), None, learning.width, stem_stride(data)
        ),
        data.num_classes,
    ).state_dict()
    theirs = champion_model.state_dict()
    fits = fresh.keys() == theirs.keys() and all(fresh[k].shape == theirs[k].shape for k in fresh)
    return champion_model if fits else None


def pool_teacher(
    ws: Workspace,
    cycle_id: int,
    data: CycleData,
    learning: LearningSettings,
    start_from: nn.Module | None = None,
) -> tuple[PoolTeacher | None, dict[str, Any]]:
    """Targets for the unaccepted pool (None when ``learning.teacher``'s rule says not to
    teach, or there is no pool), and the summary the cycle's metrics keep. They are
    propagated over the embedding this cycle selected with, or over the features of the
    champion it continues from (``start_from``) when ``learning.teacher_features`` says so."""
    teach, reason = teacher_rule(learning.teacher, data.labeled.labels, data.num_classes)
    if not teach or not data.pool_ids:
        return None, {"reason": reason + (" (but there is no pool)" if teach else "")}
    if learning.teacher_features == "champion" and isinstance(start_from, Classifier):
        features = start_from.backbone
        teacher = propagation_teacher(
            embed(features, data.labeled.images, device=learning.device),
            embed(features, data.pool_images, device=learning.device),
            data.labeled.labels,
            data.num_classes,
            learning,
            reason,
            "champion",
        )
        return teacher, teacher.summary()
    # The store, not the cycle's artifact: its vectors are the same (the plan's embedding),
    # read in the pool's order with no id made a Python string.
    plan = plan_of(load_cycle(ws, cycle_id))
    if plan is None:
        raise InvalidInputError(f"cycle {cycle_id} has no embeddings: run its select step")
    store = EmbeddingStore(ws.settings.storage_root)
    try:
        labeled = store.get(plan.fingerprint, data.labeled.ids)
        pool = store.get(plan.fingerprint, data.pool_ids)
    except NotFoundError as exc:
        raise InvalidInputError(f"cycle {cycle_id}'s embeddings lack samples: {exc}") from exc
    teacher = propagation_teacher(
        labeled,
        pool,
        data.labeled.labels,
        data.num_classes,
        learning,
        reason,
        plan.embedder,
    )
    return teacher, teacher.summary()


def cycle_metrics(
    judged: Judgement, outputs: dict[str, Any], version: VersionInfo, data: CycleData
) -> dict[str, Any]:
    """The cycle's metrics: the judgement, the selection's summary and the version's counts."""
    selection, consensus = outputs["selection"], outputs.get("consensus", {})
    metrics: dict[str, Any] = {
        "test_accuracy": judged.candidate.accuracy,
        "test_ece": judged.candidate.ece,
        "champion_accuracy": judged.incumbent.accuracy if judged.incumbent else None,
    }
    for key in ("embedding", "embedding_scores", "accepted", "needs_review"):
        metrics[key] = selection[key]
    for key in ("disputed_by_champion", "calibration", "selection_round", "pool"):
        metrics[key] = selection[key]
    metrics["labels_written"] = selection["labels_written"]
    metrics["feedback_labels"] = consensus.get("labels_written", 0)
    metrics["feedback_review"] = consensus.get("review", 0)
    metrics["labels_by_source"] = version.stats["by_source"]
    metrics["pseudo_precision"] = selection["pseudo_precision"]
    metrics["pseudo_coverage"] = selection["pseudo_coverage"]
    metrics["input"] = data.input.as_dict() if data.input else None
    metrics["profile"] = outputs.get(PROFILE)
    return metrics


def run_train_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Train, evaluate and gate a model on the cycle's dataset version; register it. A pool
    image lost while it trains is quarantined, and the step runs again without it."""
    learning = cycle_learning(load_cycle(ws, cycle_id))
    release_freed_memory()  # what the select step freed: not the training's to keep
    return run_without_lost_samples(
        ws, cycle_id, learning, lambda: train_step(ws, registry, cycle_id, progress)
    )


def train_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None
) -> dict[str, Any]:
    cycle = load_cycle(ws, cycle_id)
    outputs = cycle.outputs or {}
    if "train" in outputs:
        return outputs["train"]
    if cycle.dataset_version_out is None or "selection" not in outputs:
        raise InvalidInputError(f"cycle {cycle_id} has no selection yet: run its select step")
    learning = cycle_learning(cycle)
    step = reporter(ws, cycle_id, progress)
    version = ws.versions.resolve(cycle.dataset_version_out)
    data = load_data(ws, cycle_id, learning)
    champion = registry.champion()
    comparable = champion is not None and champion.predicts(data.classes)
    champion_model = registry.load(champion.version) if comparable and champion else None

    registered = model_of_cycle(registry, cycle_id)
    if registered is not None:
        # The model was registered but the step died before recording it: judge it again
        # (deterministic) instead of training a duplicate.
        if registered.run_id:
            # Registering was the run's last act: a run the dead attempt left open is done.
            registry.end_run(registered.run_id, "FINISHED")
        step(CycleState.EVALUATING, 0.85, "evaluating on the frozen test split")
        judged = judge(registry.load(registered.version), champion_model, data, learning)
        metrics = cycle_metrics(judged, outputs, version, data)
        if registered.run_id:  # what the dead attempt started from, as its run recorded
            params = registry.client.get_run(registered.run_id).data.params
            metrics["started_from"] = params.get("started_from")
        start_from = warm_start_model(champion, champion_model, data, learning)
        metrics["teacher"] = pool_teacher(ws, cycle_id, data, learning, start_from)[1]
        model_version, gate = registered.version, judged.gate
    else:
        if cycle.mlflow_run_id:
            registry.end_run(cycle.mlflow_run_id, "KILLED")  # an earlier attempt's, left open
        model_version, gate, metrics = train_and_register(
            ws, registry, cycle_id, data, version, champion_model, step, champion
        )
    metrics["model_version"] = model_version
    metrics["gate"] = gate.as_dict()
    out = {"model_version": model_version, "promote": gate.promote, "reason": gate.reason}
    record_output(ws, cycle_id, "train", out, metrics=metrics)
    return out


def train_and_register(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    data: CycleData,
    version: VersionInfo,
    champion_model: nn.Module | None,
    step: Step,
    champion: ModelVersion | None = None,
) -> tuple[str, GateDecision, dict[str, Any]]:
    """Train the cycle's model inside its MLflow run, judge it and register it: (model
    version, gate decision, metrics)."""
    cycle = load_cycle(ws, cycle_id)
    learning, outputs = cycle_learning(cycle), cycle.outputs or {}
    selection = outputs["selection"]
    accepted, labels, scores = load_selection(ws, cycle_id, data)
    bootstrap = bool(selection["bootstrap"])
    step(CycleState.TRAINING, 0.5, "training the classifier")
    # The select step's SSL checkpoint: found in the shared cache, or retrained identically.
    pretrained = pretrained_start(learning, data, ws.blobs)
    cache = Path(ws.settings.data_dir) / "cache" / "ssl"
    planned = SSLRun(**selection["ssl"]) if selection.get("ssl") else None
    ssl = train_ssl_backbone(data, learning, cache, pretrained=pretrained, run=planned)
    start_from = warm_start_model(champion, champion_model, data, learning)
    teacher, taught = pool_teacher(ws, cycle_id, data, learning, start_from)
    profile = outputs.get(PROFILE) or {}
    run_params = {
        **learning.model_dump(),
        "cycle_id": cycle_id,
        "dataset_version": version.id,
        "embedding": selection["embedding"],
        "input_size": data.input.size if data.input else None,
        "started_from": f"champion {champion.version}" if start_from and champion else "ssl",
        **{f"profile_{k}": v for k, v in profile.items() if k.endswith("reason")},
        **{f"teacher_{k}": v for k, v in taught.items()},
        **{f"pretrained_{k}": v for k, v in (pretrained.summary() if pretrained else {}).items()},
    }
    with registry.run(f"cycle-{cycle_id}", run_params, {DATASET_VERSION_TAG: version.id}) as run_id:
        update_cycle(ws, cycle_id, mlflow_run_id=run_id)
        registry.log_dict(
            {"dataset_version": version.id, "parent": version.parent_id, "stats": version.stats},
            "dataset_version.json",
        )
        registry.log_dataset_input(version.manifest_uri, version.id, "training")
        for epoch, loss in enumerate(ssl.losses if ssl is not None else [], start=1):
            registry.log_metrics({"ssl_loss": loss}, step=epoch)  # the embedding it started from

        def on_epoch(epoch: int, epochs: int, loss: float) -> None:
            registry.log_metrics({"train_loss": loss}, step=epoch)
            step(CycleState.TRAINING, 0.5 + 0.35 * epoch / epochs, f"epoch {epoch}/{epochs}")

        trained = fit_classifier(
            data,
            accepted,
            labels,
            scores,
            learning,
            start_backbone(learning, data, ssl, pretrained),
            fixmatch=learning.fixmatch == "all" or bootstrap,
            # A new seed per cycle: a rejected cycle is not simply repeated by the next one.
            seed=learning.seed + cycle_id,
            on_epoch=on_epoch,
            start_from=start_from,
            teacher=(teacher.labels, teacher.weights) if teacher is not None else None,
        )
        step(CycleState.EVALUATING, 0.85, "evaluating on the frozen test split")
        judged = judge(trained.model, champion_model, data, learning)
        candidate, gate = judged.candidate, judged.gate
        metrics = cycle_metrics(judged, outputs, version, data)
        metrics["started_from"] = run_params["started_from"]
        metrics["teacher"] = taught
        registry.log_metrics(
            {k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None}
        )
        per_class = zip(data.classes, candidate.per_class_accuracy, strict=True)
        registry.log_metrics({f"test_accuracy_class_{c}": a or 0.0 for c, a in per_class})
        registry.log_dict({"gate": gate.as_dict(), "metrics": metrics}, "gate.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = confusion_matrix_png(
                candidate.confusion, data.classes, Path(tmp) / "confusion_matrix.png"
            )
            registry.log_artifact(png)
            index = load_anchor_index(ws, cycle_id)
            if index is not None:
                path = Path(tmp) / "anchors.faiss"
                faiss.write_index(index, str(path))
                registry.log_artifact(path)
        model_version = registry.log_model(
            trained.model,
            {
                "cycle_id": str(cycle_id),
                DATASET_VERSION_TAG: version.id,
                **classes_tag(data.classes),
                "test_accuracy": f"{candidate.accuracy:.4f}",
                # What serving brings an input to before the model sees it.
                **(data.input.tags() if data.input else {}),
            },
        )
    return model_version.version, gate, metrics
