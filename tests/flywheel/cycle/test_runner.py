"""A full small cycle end to end on CPU: real SQLite/PostgreSQL, real MLflow store, real torch."""

import pytest
from sqlalchemy import select

from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.db import Cycle, Label, ReviewItem
from flywheel.errors import InvalidInputError
from flywheel.learn.registry import ModelRegistry
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace, open_workspace

TINY = {
    "ssl_epochs": 2,
    "train_epochs": 3,
    "fixmatch_epochs": 1,
    "steps_per_epoch": 2,
    "width": 8,
    "batch_size": 32,
    "continue_epochs": 1,
    # The data profile's own test decides "auto" (tests/flywheel/cycle/test_profile.py);
    # elsewhere a fixed preset keeps cycles fast.
    "augment": "digits",
}


def ingest_digits(ws: Workspace, n: int = 400, labels_per_class: int = 4) -> None:
    plan = SplitPlan(labels_per_class=labels_per_class, test_fraction=0.3, seed=0)
    cands = digits_candidates()[:n]
    ingest_candidates(ws.db, ws.blobs, cands, "digits", ws.settings.ingest, plan)
    ws.versions.snapshot("seed labels")


def test_two_cycles_end_to_end(tiny_settings: Settings) -> None:
    ws = open_workspace(tiny_settings)
    ingest_digits(ws)
    registry = ModelRegistry.from_settings(tiny_settings)
    steps: list[str] = []
    first = run_cycle(ws, registry, tiny_settings.learning, lambda s, f, m: steps.append(s))
    in_order = [s for i, s in enumerate(steps) if i == 0 or steps[i - 1] != s]
    assert in_order == [
        "embedding",
        "selecting",
        "versioning",
        "training",
        "evaluating",
        "promoted",
    ]
    assert first.state == "promoted"  # no champion yet: the first model is promoted
    assert registry.champion().version == first.model_version
    assert 0.0 <= first.metrics["test_accuracy"] <= 1.0
    assert first.metrics["embedding"] in ("ssl", "pca")
    assert set(first.metrics["embedding_scores"]) >= {"ssl", "pca"}

    second = run_cycle(ws, registry, tiny_settings.learning)
    assert second.state in ("promoted", "rejected")
    assert second.gate.champion_accuracy == pytest.approx(first.metrics["test_accuracy"])
    champion = registry.champion().version
    assert champion == (second.model_version if second.state == "promoted" else first.model_version)

    with ws.db.session() as s:
        cycles = s.scalars(select(Cycle).order_by(Cycle.id)).all()
        pseudo = s.scalars(select(Label).where(Label.source == "pseudo")).all()
        reviews = s.scalars(select(ReviewItem).order_by(ReviewItem.id)).all()
    assert [c.state for c in cycles] == [first.state, second.state]
    assert all(c.progress == 1.0 and c.mlflow_run_id for c in cycles)
    assert cycles[0].dataset_version_out == first.dataset_version
    # Every pseudo-label carries its evidence and the cycle that made it.
    assert all(p.cycle_id in (1, 2) and "neighbors" in p.evidence for p in pseudo)
    assert all(r.evidence["decision"] == "needs_review" for r in reviews)
    # The rows written show their labeled neighbours (found again for them alone).
    assert all(p.evidence["neighbors"] for p in pseudo if not p.retracted)
    assert reviews and all(r.evidence["neighbors"] for r in reviews)
    # Each cycle's review items are queued in the order of expected benefit.
    for cycle_id in (1, 2):
        ranks = [r.evidence["review"]["rank"] for r in reviews if r.cycle_id == cycle_id]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    version = ws.versions.resolve(first.dataset_version)
    assert version.stats["by_source"].get("pseudo", 0) == first.metrics["accepted"]
    run = registry.client.get_run(cycles[0].mlflow_run_id)
    assert "test_accuracy" in run.data.metrics and "train_loss" in run.data.metrics
    assert run.data.params["dataset_version"] == first.dataset_version
    artifacts = {a.path for a in registry.client.list_artifacts(cycles[1].mlflow_run_id)}
    assert {"confusion_matrix.png", "gate.json", "anchors.faiss"} <= artifacts
    ws.close()


def test_cycle_without_labels_fails_with_reason(tiny_settings: Settings, make_png) -> None:
    from flywheel.store.ingest import Candidate

    ws = open_workspace(tiny_settings)
    cands = [Candidate(f"u{i}", lambda i=i: make_png(i)) for i in range(5)]
    ingest_candidates(ws.db, ws.blobs, cands, "t", ws.settings.ingest)
    registry = ModelRegistry.from_settings(tiny_settings)
    with pytest.raises(InvalidInputError, match="at least two classes"):
        run_cycle(ws, registry, tiny_settings.learning)
    with ws.db.session() as s:
        cycle = s.scalars(select(Cycle)).one()
    assert cycle.state == "failed" and "at least two classes" in cycle.error
    ws.close()


def test_calibrated_selection_without_bootstrap(tmp_path) -> None:
    """The certified strategy: thresholds calibrated on human labels, no FixMatch bootstrap."""
    learning = {**TINY, "selection": "calibrated", "fixmatch": "none", "target_precision": 0.9}
    settings = Settings(data_dir=tmp_path / "d", learning=learning)
    ws = open_workspace(settings)
    ingest_digits(ws, n=300, labels_per_class=4)
    registry = ModelRegistry.from_settings(settings)
    result = run_cycle(ws, registry, settings.learning)
    assert "out-of-fold" in result.metrics["calibration"]
    assert result.metrics["selection_round"] == 0
    with ws.db.session() as s:
        pseudo = s.scalars(select(Label).where(Label.source == "pseudo")).all()
    assert len(pseudo) == result.metrics["accepted"]
    assert all(p.evidence["decision"] == "accepted" for p in pseudo)
    ws.close()


def test_gpu_profile_code_path_runs_on_cpu(tmp_path) -> None:
    """configs/gpu.yaml's choices (ResNet-18, RGB, resize, natural augmentations), tiny."""
    from pathlib import Path

    from flywheel.config import load_settings

    repo = Path(__file__).resolve().parents[3]
    gpu = load_settings(repo / "configs" / "gpu.yaml", data_dir=tmp_path / "d")
    learning = gpu.learning.model_copy(
        update={
            "ssl_epochs": 1,
            "train_epochs": 1,
            "fixmatch_epochs": 1,
            "steps_per_epoch": 1,
            "batch_size": 16,
            "num_workers": 1,  # augmentations in a worker process, as on a GPU node
            "image_size": 16,
        }
    )
    settings = gpu.model_copy(update={"learning": learning})
    ws = open_workspace(settings)
    ingest_digits(ws, n=120, labels_per_class=2)
    result = run_cycle(ws, ModelRegistry.from_settings(settings), settings.learning)
    assert result.state == "promoted"
    assert ModelRegistry.from_settings(settings).load().backbone.name == "resnet18"
    ws.close()


def test_write_selection_requeues_uncertain_but_keeps_feedback_conflicts(workspace) -> None:
    """A cycle's review item replaces an older cycle's, never users' open feedback conflict."""
    import numpy as np

    from flywheel.cycle.label_writer import write_selection
    from flywheel.cycle.state import start_cycle
    from flywheel.db.models import ReviewReason
    from flywheel.learn.data import CycleData, LabeledSet
    from flywheel.learn.sample_rows import PoolLabels
    from flywheel.select.outcome import SelectionOutcome
    from flywheel.select.result import Decision, SelectionResult
    from tests.conftest import sample_row

    ids = [f"{i:064x}" for i in range(2)]
    with workspace.db.session() as s:
        s.add_all([sample_row(i, source="t") for i in range(2)])
        s.flush()
        s.add(ReviewItem(sample_id=ids[0], reason="uncertain", proposed_label="a", evidence={}))
        s.add(
            ReviewItem(
                sample_id=ids[1],
                reason=ReviewReason.FEEDBACK_CONFLICT,
                proposed_label="a",
                evidence={"votes": []},
            )
        )
    empty = LabeledSet([], np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64))
    data = CycleData(
        ["a", "b"],
        empty,
        empty,
        ids,
        np.zeros((2, 8, 8), np.uint8),
        PoolLabels.of(ids, {}, ["a", "b"]),
        np.full(2, -1),
    )
    n = len(ids)
    result = SelectionResult(
        decision=np.full(n, Decision.NEEDS_REVIEW, np.int8),
        label=np.zeros(n, np.int64),
        score=np.full(n, 0.5, np.float32),
        classifier_prob=np.full(n, 0.5, np.float32),
        knn_share=np.full(n, 0.5, np.float32),
        neighbor_ids=np.full((n, 1), -1),
        neighbor_sims=np.zeros((n, 1), np.float32),
        capped=np.zeros(n, bool),
        thresholds=np.full(2, np.inf),
        review_thresholds=np.zeros(2),
        accepted_per_class=np.zeros(2, np.int64),
        calibration=None,  # type: ignore[arg-type]
        counts={},
    )
    cycle_id = start_cycle(workspace, workspace.settings.learning)
    counts = write_selection(workspace, cycle_id, data, SelectionOutcome(result, [], "pca", "x"))
    assert counts["review"] == 1
    with workspace.db.session() as s:
        items = {(r.sample_id, r.reason, r.state) for r in s.scalars(select(ReviewItem))}
    assert items == {
        (ids[0], "uncertain", "superseded"),
        (ids[0], "uncertain", "open"),  # this cycle's item
        (ids[1], ReviewReason.FEEDBACK_CONFLICT, "open"),  # untouched; no second item for it
    }
