"""The steps of one cycle, each safe to run again: consensus -> select -> train -> finish.

A worker may die mid-step and the broker then hands the step to another worker, so every
step follows one rule (DESIGN.md, habit 4): its output is recorded under the cycle, and a
step that finds its output already there returns it without doing the work twice.

The select step fixes the model's input (size, channels, resize policy) as
``outputs["selection"]["input"]``; the train step reads at that size and tags the model
with it. Samples that cannot be read are quarantined (``flywheel.store.quarantine``).

- ``consensus`` (CPU): users' feedback becomes labels; output ``outputs["consensus"]``.
- ``select`` (GPU): SSL embedding, pseudo-label selection, labels written, a new dataset
  version; output ``dataset_version_out``. The labels and ``outputs["selection"]`` commit in
  one transaction, and the accepted labels are also kept as ``cycles/<id>/selection.npz``
  in the store, so the next step trains on exactly what was selected. The chosen embedding
  of every sample is kept as ``cycles/<id>/embeddings.npz`` (label audit, embedding map).
- ``train`` (GPU): classifier trained, evaluated, gated and registered in MLflow; output the
  model version tagged with the cycle id, then ``outputs["train"]``.
- ``finish`` (CPU): the gate's decision applied (promotion) and the final state.

Steps take ids, re-read everything else (the learning settings are the cycle's ``params``,
fixed when it was queued) and report progress into the cycles table.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import select, text

from flywheel.config import LearningSettings
from flywheel.db import Cycle, Label, ReviewItem
from flywheel.db.models import CycleState, LabelSource, ReviewState, utcnow
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.feedback.consensus import CONFLICT_REASON, resolve_feedback
from flywheel.insights.plots import confusion_matrix_png
from flywheel.learn.data import CycleData, ModelInput, load_cycle_data
from flywheel.learn.embeddings import EmbeddingCache, EmbeddingChoice, choose_embedding
from flywheel.learn.gate import GateConfig, GateDecision, decide_promotion
from flywheel.learn.recipe import (
    SelectionOutcome,
    classifier_probs,
    embedding_classifier_probs,
    fit_classifier,
    pseudo_label_quality,
    select_by_model_agreement,
    select_for_cycle,
    train_ssl_backbone,
)
from flywheel.learn.registry import ModelRegistry, ModelVersion
from flywheel.learn.training import EvalResult, evaluate
from flywheel.select.calibrated import Decision
from flywheel.store.storage import open_location, read_bytes, write_atomic
from flywheel.workspace import Workspace

# (state, fraction of the cycle done, message): drives progress bars
Progress = Callable[[str, float, str], None]
PSEUDO_METHOD = "knn+classifier"
STEPS = ("consensus", "select", "train", "finish")
FINISHED = (CycleState.PROMOTED.value, CycleState.REJECTED.value, CycleState.FAILED.value)


@dataclass
class CycleResult:
    cycle_id: int
    state: str  # promoted | rejected
    dataset_version: str
    model_version: str
    gate: GateDecision
    metrics: dict[str, Any] = field(default_factory=dict)


# --- the cycles row ----------------------------------------------------------------------
def load_cycle(ws: Workspace, cycle_id: int) -> Cycle:
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        if cycle is None:
            raise NotFoundError(f"no cycle {cycle_id}")
        s.expunge(cycle)
    return cycle


def queued_cycle(learning: LearningSettings, trigger: str, message: str | None = None) -> Cycle:
    """A new cycle row; its steps read ``learning`` back from it (its ``params``)."""
    return Cycle(
        state=CycleState.QUEUED.value,
        params=learning.model_dump(),
        progress=0.0,
        trigger=trigger,
        outputs={},
        message=message,
    )


def update_cycle(ws: Workspace, cycle_id: int, **fields: Any) -> None:
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        if cycle is None:
            raise NotFoundError(f"no cycle {cycle_id}")
        for key, value in fields.items():
            setattr(cycle, key, value)


def _record_output(s: Any, cycle_id: int, name: str, value: Any, **fields: Any) -> None:
    """Add ``outputs[name]`` (and ``fields``) to the cycle inside the caller's transaction."""
    cycle = s.get(Cycle, cycle_id)
    cycle.outputs = {**(cycle.outputs or {}), name: value}  # a new dict: JSON columns
    for key, value_ in fields.items():  # are only saved when reassigned
        setattr(cycle, key, value_)


def record_output(ws: Workspace, cycle_id: int, name: str, value: Any, **fields: Any) -> None:
    with ws.db.session() as s:
        _record_output(s, cycle_id, name, value, **fields)


def cycle_learning(cycle: Cycle) -> LearningSettings:
    """The learning settings the cycle was queued with: every step uses the same ones."""
    return LearningSettings.model_validate(cycle.params or {})


def load_data(ws: Workspace, cycle_id: int, learning: LearningSettings) -> CycleData:
    """The cycle's data; after selection at the input size the selection recorded, so
    samples arriving between steps cannot change the size the train step sees."""
    selection = (load_cycle(ws, cycle_id).outputs or {}).get("selection") or {}
    recorded = ModelInput.from_dict(selection.get("input"))
    size = recorded.size if recorded is not None else learning.image_size
    return load_cycle_data(
        ws.db, ws.blobs, size, learning.channels, resize=learning.resize, cycle_id=cycle_id
    )


def reporter(ws: Workspace, cycle_id: int, progress: Progress | None) -> Callable[..., None]:
    def step(state: CycleState, fraction: float, message: str) -> None:
        update_cycle(
            ws, cycle_id, state=state.value, step=state.value, progress=fraction, message=message
        )
        if progress:
            progress(state.value, fraction, message)

    return step


# --- artifacts in the store ----------------------------------------------------------------
def _artifact(ws: Workspace, cycle_id: int, name: str) -> tuple[Any, str]:
    loc = open_location(ws.settings.storage_root)
    return loc.fs, loc.path("cycles", str(cycle_id), name)


def save_selection(
    ws: Workspace, cycle_id: int, data: CycleData, outcome: SelectionOutcome | None
) -> None:
    """The accepted pseudo-labels (ids, class names, scores) and the anchors' FAISS index."""
    ids: list[str] = []
    names: list[str] = []
    scores = np.zeros(0, dtype=np.float32)
    if outcome is not None:
        accepted = outcome.result.decision == Decision.ACCEPTED
        ids = [sid for sid, a in zip(data.pool_ids, accepted, strict=True) if a]
        names = [data.classes[int(c)] for c in outcome.result.label[accepted]]
        scores = outcome.result.score[accepted].astype(np.float32)
        if outcome.index is not None:
            fs, path = _artifact(ws, cycle_id, "anchors.faiss")
            write_atomic(fs, path, faiss.serialize_index(outcome.index).tobytes())
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids, dtype=str), labels=np.array(names, dtype=str), scores=scores)
    fs, path = _artifact(ws, cycle_id, "selection.npz")
    # Overwritten, not write-once: a retry after a crash before the labels committed wrote
    # this file for a selection that never counted; the committed one is the last written.
    write_atomic(fs, path, buf.getvalue())


def load_selection(
    ws: Workspace, cycle_id: int, data: CycleData
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``save_selection``'s labels aligned to ``data.pool_ids``: accepted mask, class, score."""
    fs, path = _artifact(ws, cycle_id, "selection.npz")
    saved = np.load(io.BytesIO(read_bytes(fs, path)))
    chosen = {
        str(sid): (str(name), float(score))
        for sid, name, score in zip(saved["ids"], saved["labels"], saved["scores"], strict=True)
    }
    index = {c: i for i, c in enumerate(data.classes)}
    # A sample labeled by a person since the selection left the pool: it trains as labeled.
    accepted = np.array([sid in chosen for sid in data.pool_ids], dtype=bool)
    picked = [chosen[sid] for sid, a in zip(data.pool_ids, accepted, strict=True) if a]
    labels = np.array([index[name] for name, _ in picked], dtype=np.int64)
    scores = np.array([score for _, score in picked], dtype=np.float32)
    return accepted, labels, scores


@dataclass(frozen=True)
class EmbeddingSnapshot:
    """A cycle's chosen embedding of every sample it saw (``cycles/<id>/embeddings.npz``)."""

    ids: np.ndarray  # str (n,): labeled, then pool, then test sample ids
    split: np.ndarray  # str (n,): "labeled" | "pool" | "test" (the cycle's view)
    vectors: np.ndarray  # float32 (n, d), unit rows
    name: str  # the embedding's name ("ssl" or "pca")
    cycle_id: int


EMBEDDINGS_ARTIFACT = "embeddings.npz"


def save_embeddings(ws: Workspace, cycle_id: int, choice: EmbeddingChoice, data: CycleData) -> None:
    parts = (
        ("labeled", data.labeled.ids, choice.labeled),
        ("pool", data.pool_ids, choice.pool),
        ("test", data.test.ids, choice.test),
    )
    buf = io.BytesIO()
    np.savez(
        buf,
        ids=np.array([sid for _, ids, _ in parts for sid in ids], dtype=str),
        split=np.array([name for name, ids, _ in parts for _ in ids], dtype=str),
        vectors=np.concatenate([v for _, _, v in parts]).astype(np.float32, copy=False),
        name=np.array(choice.name),
    )
    fs, path = _artifact(ws, cycle_id, EMBEDDINGS_ARTIFACT)
    write_atomic(fs, path, buf.getvalue())  # a retried step writes the same rows again


def load_embeddings(ws: Workspace, cycle_id: int) -> EmbeddingSnapshot | None:
    """The embeddings cycle ``cycle_id`` selected with; None if its select step never ran."""
    fs, path = _artifact(ws, cycle_id, EMBEDDINGS_ARTIFACT)
    try:
        raw = read_bytes(fs, path)
    except NotFoundError:
        return None
    with np.load(io.BytesIO(raw)) as f:
        vectors = f["vectors"].astype(np.float32, copy=False)
        return EmbeddingSnapshot(f["ids"], f["split"], vectors, str(f["name"]), cycle_id)


def latest_embeddings(ws: Workspace) -> EmbeddingSnapshot | None:
    """The newest cycle's embeddings artifact (cycles that never selected are skipped)."""
    with ws.db.session() as s:
        ids = s.scalars(select(Cycle.id).order_by(Cycle.id.desc())).all()
    for cycle_id in ids:
        snapshot = load_embeddings(ws, cycle_id)
        if snapshot is not None:
            return snapshot
    return None


def load_anchor_index(ws: Workspace, cycle_id: int) -> faiss.Index | None:
    fs, path = _artifact(ws, cycle_id, "anchors.faiss")
    try:
        raw = read_bytes(fs, path)
    except NotFoundError:
        return None
    return faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))


# --- step 1: consensus ---------------------------------------------------------------------
def run_consensus_step(ws: Workspace, cycle_id: int, progress: Progress | None = None) -> dict:
    """Users' feedback becomes labels (or review items) before the cycle reads its labels."""
    done = (load_cycle(ws, cycle_id).outputs or {}).get("consensus")
    if done is not None:
        return done
    versions_before = ws.versions.list()
    version_in = versions_before[-1].id if versions_before else None
    reporter(ws, cycle_id, progress)(CycleState.EMBEDDING, 0.0, "resolving users' feedback")
    report = resolve_feedback(ws.db, ws.settings.consensus)
    out = {
        "labels_written": report.labels_written,
        "review": report.review_opened + report.review_updated,
        "samples": report.samples,
        "annotators": report.annotators,
    }
    record_output(ws, cycle_id, "consensus", out, dataset_version_in=version_in)
    return out


# --- step 2: select ------------------------------------------------------------------------
def _finished_selection_rounds(ws: Workspace) -> int:
    """How many earlier cycles selected pseudo-labels: drives the agreement quota."""
    with ws.db.session() as s:
        metrics = s.scalars(
            select(Cycle.metrics).where(
                Cycle.state.in_([CycleState.PROMOTED.value, CycleState.REJECTED.value])
            )
        ).all()
    return sum(1 for m in metrics if (m or {}).get("selection_round") is not None)


def run_select_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> str:
    """Select pseudo-labels, write them, snapshot a dataset version; returns its id."""
    cycle = load_cycle(ws, cycle_id)
    if cycle.dataset_version_out is not None:
        return cycle.dataset_version_out
    step = reporter(ws, cycle_id, progress)
    if "selection" not in (cycle.outputs or {}):
        _select_and_write(ws, registry, cycle_id, cycle_learning(cycle), step)
    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    version, _ = ws.versions.snapshot(f"cycle {cycle_id}")  # content-addressed: same id
    update_cycle(ws, cycle_id, dataset_version_out=version.id)
    return version.id


def _select_and_write(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    learning: LearningSettings,
    step: Callable[[CycleState, float, str], None],
) -> None:
    data_dir = Path(ws.settings.data_dir)
    step(CycleState.EMBEDDING, 0.0, "self-supervised embedding")
    data = load_data(ws, cycle_id, learning)
    champion, latest = registry.champion(), registry.latest()
    champion_model = registry.load(champion.version) if champion else None
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
    save_embeddings(ws, cycle_id, choice, data)

    # Bootstrap: with no model yet, FixMatch on the pool does better than pseudo-labels
    # picked without a model's second opinion (bench/LEARNING_NOTES.md).
    bootstrap = champion is None and learning.fixmatch == "first"
    outcome: SelectionOutcome | None = None
    selection_round = 0
    if bootstrap:
        step(CycleState.SELECTING, 0.25, "no champion yet: bootstrap on human labels + FixMatch")
        quality: dict[str, float | None] = {"pseudo_precision": None, "pseudo_coverage": 0.0}
    else:
        step(CycleState.SELECTING, 0.25, f"selecting pseudo-labels ({choice.name} embedding)")
        if learning.selection == "agreement":
            # The newest model, promoted or not, is the best opinion on the pool: it was
            # trained on the most labels. The gate still decides what is served.
            usable = latest is not None and latest.tags.get("classes") == ",".join(data.classes)
            latest_model = (
                champion_model
                if latest is None or (champion is not None and latest.version == champion.version)
                else registry.load(latest.version)
            )
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
        quality = pseudo_label_quality(data, outcome.result)

    step(CycleState.VERSIONING, 0.4, "writing labels and a new dataset version")
    save_selection(ws, cycle_id, data, outcome)
    summary = {
        "bootstrap": bootstrap,
        "embedding": choice.name,
        "embedding_scores": choice.scores,
        "accepted": int((outcome.result.decision == Decision.ACCEPTED).sum()) if outcome else 0,
        "needs_review": int(outcome.result.counts["needs_review"]) if outcome else 0,
        "disputed_by_champion": int(outcome.result.counts.get("disputed_by_champion", 0))
        if outcome
        else 0,
        "calibration": outcome.calibration if outcome else "bootstrap (no selection)",
        "selection_round": None if bootstrap else selection_round,
        "pool": len(data.pool_ids),
        "input": data.input.as_dict() if data.input else None,
        **quality,
    }
    write_selection(ws, cycle_id, data, outcome, summary)


def write_selection(
    ws: Workspace,
    cycle_id: int,
    data: CycleData,
    outcome: SelectionOutcome | None,
    summary: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Pseudo-labels and review items for this cycle; history is never rewritten.

    An accepted sample gets a new ``pseudo`` label unless its current pseudo-label already
    says the same; a pseudo-labeled sample that is no longer accepted gets a retraction.
    With ``summary``, ``outputs["selection"]`` (the summary plus these counts) commits in
    the same transaction: the labels are written exactly once per cycle.
    """
    counts = {"new": 0, "kept": 0, "retracted": 0, "review": 0}
    labels: list[Label] = []
    reviews: list[ReviewItem] = []
    res = outcome.result if outcome is not None else None
    for i, sid in enumerate(data.pool_ids if outcome is not None else []):
        assert res is not None and outcome is not None
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
        if summary is not None:
            # A second writer (a duplicate delivery racing this one) finds the marker.
            if s.get_bind().dialect.name == "sqlite":
                # FOR UPDATE means nothing to SQLite: take its single write lock before
                # reading the marker, or both racers read "no selection" and both write.
                s.execute(text("UPDATE cycles SET id = id WHERE 0 = 1"))
            cycle = s.get(Cycle, cycle_id, with_for_update=True)
            if cycle is not None and "selection" in (cycle.outputs or {}):
                return dict(cycle.outputs["selection"]["labels_written"])
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
        if summary is not None:
            _record_output(s, cycle_id, "selection", {**summary, "labels_written": counts})
    return counts


# --- step 3: train -------------------------------------------------------------------------
def model_of_cycle(registry: ModelRegistry, cycle_id: int) -> ModelVersion | None:
    """The registered model a cycle produced, if its train step got that far."""
    mine = [v for v in registry.versions() if v.tags.get("cycle_id") == str(cycle_id)]
    return mine[0] if mine else None


def run_train_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Train, evaluate and gate a model on the cycle's dataset version; register it."""
    cycle = load_cycle(ws, cycle_id)
    outputs = cycle.outputs or {}
    if "train" in outputs:
        return outputs["train"]
    if cycle.dataset_version_out is None or "selection" not in outputs:
        raise InvalidInputError(f"cycle {cycle_id} has no selection yet: run its select step")
    learning = cycle_learning(cycle)
    selection = outputs["selection"]
    step = reporter(ws, cycle_id, progress)
    version = ws.versions.resolve(cycle.dataset_version_out)
    data = load_data(ws, cycle_id, learning)
    accepted, labels, scores = load_selection(ws, cycle_id, data)
    champion = registry.champion()
    comparable = champion is not None and champion.tags.get("classes") == ",".join(data.classes)
    champion_model = registry.load(champion.version) if comparable and champion else None

    def judge(model: Any) -> tuple[EvalResult, EvalResult | None, GateDecision]:
        step(CycleState.EVALUATING, 0.85, "evaluating on the frozen test split")
        candidate = evaluate(
            classifier_probs(model, data.test.images, data.num_classes),
            data.test.labels,
            data.num_classes,
        )
        incumbent = None
        if champion_model is not None:
            incumbent = evaluate(
                classifier_probs(champion_model, data.test.images, data.num_classes),
                data.test.labels,
                data.num_classes,
            )
        gate = decide_promotion(
            candidate,
            incumbent,
            GateConfig(learning.gate_margin, learning.gate_per_class_tolerance),
        )
        return candidate, incumbent, gate

    def cycle_metrics(candidate: EvalResult, incumbent: EvalResult | None) -> dict[str, Any]:
        consensus = outputs.get("consensus", {})
        metrics: dict[str, Any] = {
            "test_accuracy": candidate.accuracy,
            "test_ece": candidate.ece,
            "champion_accuracy": incumbent.accuracy if incumbent else None,
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
        return metrics

    registered = model_of_cycle(registry, cycle_id)
    if registered is not None:
        # The model was registered but the step died before recording it: judge it again
        # (deterministic) instead of training a duplicate.
        if registered.run_id:
            # Registering was the run's last act: a run the dead attempt left open is done.
            registry.end_run(registered.run_id, "FINISHED")
        candidate, incumbent, gate = judge(registry.load(registered.version))
        metrics = cycle_metrics(candidate, incumbent)
        model_version = registered.version
    else:
        if cycle.mlflow_run_id:
            registry.end_run(cycle.mlflow_run_id, "KILLED")  # an earlier attempt's, left open
        model_version, gate, metrics = _train_and_register(
            ws, registry, cycle_id, learning, data, version, selection, step,
            (accepted, labels, scores), judge, cycle_metrics,
        )  # fmt: skip
    metrics["model_version"] = model_version
    metrics["gate"] = gate.as_dict()
    out = {"model_version": model_version, "promote": gate.promote, "reason": gate.reason}
    record_output(ws, cycle_id, "train", out, metrics=metrics)
    return out


def _train_and_register(
    ws: Workspace,
    registry: ModelRegistry,
    cycle_id: int,
    learning: LearningSettings,
    data: CycleData,
    version: Any,
    selection: dict[str, Any],
    step: Callable[[CycleState, float, str], None],
    chosen: tuple[np.ndarray, np.ndarray, np.ndarray],
    judge: Callable[[Any], tuple[EvalResult, EvalResult | None, GateDecision]],
    cycle_metrics: Callable[[EvalResult, EvalResult | None], dict[str, Any]],
) -> tuple[str, GateDecision, dict[str, Any]]:
    accepted, labels, scores = chosen
    bootstrap = bool(selection["bootstrap"])
    step(CycleState.TRAINING, 0.5, "training the classifier")
    # The select step's SSL checkpoint: found in the shared cache, or retrained identically.
    ssl = train_ssl_backbone(data, learning, Path(ws.settings.data_dir) / "cache" / "ssl")
    run_params = {
        **learning.model_dump(),
        "cycle_id": cycle_id,
        "dataset_version": version.id,
        "embedding": selection["embedding"],
        "input_size": data.input.size if data.input else None,
    }
    with registry.run(f"cycle-{cycle_id}", run_params, {"dataset_version": version.id}) as run_id:
        update_cycle(ws, cycle_id, mlflow_run_id=run_id)
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
            labels,
            scores,
            learning,
            ssl.backbone if ssl is not None else None,
            fixmatch=learning.fixmatch == "all" or bootstrap,
            # A new seed per cycle: a rejected cycle is not simply repeated by the next one.
            seed=learning.seed + cycle_id,
            on_epoch=on_epoch,
        )
        candidate, incumbent, gate = judge(trained.model)
        metrics = cycle_metrics(candidate, incumbent)
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
                "dataset_version": version.id,
                "classes": ",".join(data.classes),
                "test_accuracy": f"{candidate.accuracy:.4f}",
                # What serving brings an input to before the model sees it.
                **(data.input.tags() if data.input else {}),
            },
        )
    return model_version.version, gate, metrics


# --- step 4: finish ------------------------------------------------------------------------
def run_finish_step(
    ws: Workspace, registry: ModelRegistry, cycle_id: int, progress: Progress | None = None
) -> CycleResult:
    """Apply the gate's decision (promote or not) and close the cycle."""
    cycle = load_cycle(ws, cycle_id)
    train = (cycle.outputs or {}).get("train")
    if train is None:
        raise InvalidInputError(f"cycle {cycle_id} has no trained model yet: run its train step")
    if cycle.state not in FINISHED:
        if train["promote"]:
            champion = registry.champion()
            if champion is None or champion.version != train["model_version"]:
                registry.promote(train["model_version"], train["reason"])
        state = CycleState.PROMOTED if train["promote"] else CycleState.REJECTED
        update_cycle(ws, cycle_id, state=state.value, step=state.value, progress=1.0, message="")
        if progress:
            progress(state.value, 1.0, state.value)
        cycle = load_cycle(ws, cycle_id)
    return result_of(cycle)


def result_of(cycle: Cycle) -> CycleResult:
    """A finished cycle's result, read back from its row."""
    metrics = dict(cycle.metrics or {})
    gate = GateDecision(**metrics["gate"])
    return CycleResult(
        cycle.id,
        cycle.state,
        cycle.dataset_version_out or "",
        str(metrics["model_version"]),
        gate,
        metrics,
    )
