"""The cycle's steps are each safe to run again: a retried or redelivered step finds the
output its earlier attempt recorded and neither redoes the work nor writes it twice.

Real SQLite/PostgreSQL, a real MLflow store and real (tiny) torch training; crashes are
simulated by putting the cycle row back into the state a dead worker would leave behind.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from flywheel.cycle.label_writer import write_selection
from flywheel.cycle.runner import run_cycle
from flywheel.cycle.state import load_cycle, record_output, start_cycle, update_cycle
from flywheel.cycle.steps.consensus import run_consensus_step
from flywheel.cycle.steps.finish import run_finish_step
from flywheel.cycle.steps.select import run_select_step
from flywheel.cycle.steps.train import run_train_step
from flywheel.db import Cycle, DatasetVersion, Label, ReviewItem
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.sample_rows import PoolLabels
from flywheel.select.outcome import SelectionOutcome
from flywheel.select.result import Decision, SelectionResult
from flywheel.store.storage import read_bytes
from flywheel.workspace import Workspace
from tests.conftest import sample_row
from tests.flywheel.cycle.test_runner import ingest_digits

N_DIGITS = 200


def count(ws: Workspace, model: type, *where: Any) -> int:
    with ws.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def totals(ws: Workspace, registry: ModelRegistry) -> dict[str, Any]:
    """Everything a step could write, counted; and who is champion."""
    champion = registry.champion()
    return {
        "labels": count(ws, Label),
        "reviews": count(ws, ReviewItem),
        # Superseding an older review item is a write too.
        "review_states": sorted((r.id, r.state) for r in _all(ws, ReviewItem)),
        "versions": count(ws, DatasetVersion),
        "models": len(registry.versions()),
        "champion": champion.version if champion else None,
    }


def _all(ws: Workspace, model: type) -> list[Any]:
    with ws.db.session() as s:
        return list(s.scalars(select(model)))


def cycle_row(ws: Workspace, cycle_id: int) -> dict[str, Any]:
    c = load_cycle(ws, cycle_id)
    return {
        k: getattr(c, k)
        for k in (
            "state",
            "step",
            "progress",
            "message",
            "outputs",
            "metrics",
            "dataset_version_in",
            "dataset_version_out",
            "mlflow_run_id",
            "updated_at",
        )
    }


def run_status(registry: ModelRegistry, run_id: str) -> str:
    return registry.client.get_run(run_id).info.status


# --- 1. every step twice ---------------------------------------------------------------------
def test_each_step_run_again_returns_its_output_and_writes_nothing(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    learning = ws.settings.learning
    first = run_cycle(ws, registry, learning)
    second = run_cycle(ws, registry, learning)
    assert second.cycle_id == first.cycle_id + 1
    c2 = second.cycle_id
    before, row_before = totals(ws, registry), cycle_row(ws, c2)
    row1_before = cycle_row(ws, first.cycle_id)
    outputs = {"consensus", "profile", "select_plan", "selection", "train"}
    assert row_before["outputs"].keys() == outputs

    assert run_consensus_step(ws, c2) == row_before["outputs"]["consensus"]
    assert run_select_step(ws, registry, c2) == second.dataset_version
    assert run_train_step(ws, registry, c2) == row_before["outputs"]["train"]
    assert run_train_step(ws, registry, c2)["model_version"] == second.model_version
    assert run_finish_step(ws, registry, c2) == second
    # The older cycle's finish, redelivered late, does not take the champion back.
    assert run_finish_step(ws, registry, first.cycle_id) == first
    # The whole eager cycle again: every step skipped.
    assert run_cycle(ws, registry, learning, cycle_id=c2) == second

    assert totals(ws, registry) == before
    assert cycle_row(ws, c2) == row_before  # not even a progress update
    assert cycle_row(ws, first.cycle_id) == row1_before
    assert count(ws, Cycle) == 2


# --- 2. select died after its labels committed -----------------------------------------------
def test_select_recovers_after_labels_committed_before_the_snapshot(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    # Cycle 1 a labels-only bootstrap and cycle 2 the quota strategy, which always accepts:
    # cycle 2's labels then make a version of their own (tiny models certify little, and a
    # cycle that retracted all of cycle 1's labels would snapshot the seed version again).
    learning = ws.settings.learning.model_copy(
        update={"fixmatch": "first", "selection": "agreement"}
    )
    run_cycle(ws, registry, learning)  # a champion: cycle 2 selects pseudo-labels
    c2 = start_cycle(ws, learning)
    run_consensus_step(ws, c2)
    version = run_select_step(ws, registry, c2)
    labels_before = count(ws, Label, Label.cycle_id == c2)
    all_labels = count(ws, Label)
    versions = count(ws, DatasetVersion)
    written = load_cycle(ws, c2).outputs["selection"]["labels_written"]
    assert labels_before == written["new"] + written["retracted"]
    assert labels_before > 0, "the test needs a cycle that wrote pseudo-labels"

    # The dead worker committed the labels and outputs["selection"], then died before its
    # dataset version existed at all: no row (the manifest may or may not be in the store).
    update_cycle(ws, c2, dataset_version_out=None)
    with ws.db.session() as s:
        s.execute(delete(DatasetVersion).where(DatasetVersion.id == version))
    assert count(ws, DatasetVersion) == versions - 1

    assert run_select_step(ws, registry, c2) == version  # content-addressed: the same id
    assert load_cycle(ws, c2).dataset_version_out == version
    assert count(ws, Label, Label.cycle_id == c2) == labels_before
    assert count(ws, Label) == all_labels
    assert count(ws, DatasetVersion) == versions
    assert ws.versions.resolve(version).stats["by_source"].get("pseudo", 0) > 0

    # The snapshot existed already (the worker died right after it): still the same.
    update_cycle(ws, c2, dataset_version_out=None)
    assert run_select_step(ws, registry, c2) == version
    assert count(ws, DatasetVersion) == versions
    # And the cycle goes on from there.
    result = run_cycle(ws, registry, learning, cycle_id=c2)
    assert result.dataset_version == version
    assert count(ws, Label, Label.cycle_id == c2) == labels_before


# --- 3. write_selection is once per cycle ----------------------------------------------------
def _tiny_selection(ws: Workspace, decisions: list[Decision]) -> tuple[CycleData, SelectionOutcome]:
    """A hand-made pool of ``len(decisions)`` samples and a selection over it."""
    n = len(decisions)
    ids = [f"{i:064x}" for i in range(n)]
    with ws.db.session() as s:
        s.add_all([sample_row(i, source="t") for i in range(n)])
    empty = LabeledSet([], np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64))
    data = CycleData(
        ["a", "b"],
        empty,
        empty,
        ids,
        np.zeros((n, 8, 8), np.uint8),
        PoolLabels.of(ids, {}, ["a", "b"]),
        np.full(n, -1),
    )
    result = SelectionResult(
        decision=np.array(decisions, np.int8),
        label=np.arange(n, dtype=np.int64) % 2,
        score=np.full(n, 0.9, np.float32),
        classifier_prob=np.full(n, 0.9, np.float32),
        knn_share=np.full(n, 0.9, np.float32),
        neighbor_ids=np.full((n, 1), -1),
        neighbor_sims=np.zeros((n, 1), np.float32),
        capped=np.zeros(n, bool),
        thresholds=np.full(2, 0.5),
        review_thresholds=np.zeros(2),
        accepted_per_class=np.zeros(2, np.int64),
        calibration=None,  # type: ignore[arg-type]
        counts={},
    )
    return data, SelectionOutcome(result, [], "pca", "test")


DECISIONS = [Decision.ACCEPTED, Decision.ACCEPTED, Decision.NEEDS_REVIEW, Decision.REJECTED]


def test_write_selection_twice_for_a_cycle_writes_once(workspace) -> None:
    data, outcome = _tiny_selection(workspace, DECISIONS)
    cycle_id = start_cycle(workspace, workspace.settings.learning)
    summary = {"accepted": 2, "embedding": "pca"}
    counts = write_selection(workspace, cycle_id, data, outcome, summary)
    assert counts == {"new": 2, "kept": 0, "retracted": 0, "review": 1}
    state = (count(workspace, Label), count(workspace, ReviewItem), _all(workspace, ReviewItem))
    recorded = load_cycle(workspace, cycle_id).outputs["selection"]
    assert recorded == {**summary, "labels_written": counts}

    # A retry (the first attempt's transaction committed, its worker then died) gets the
    # recorded counts back and writes no labels or review items again.
    assert write_selection(workspace, cycle_id, data, outcome, {"other": 1}) == counts
    assert count(workspace, Label) == state[0] == 2
    assert count(workspace, ReviewItem) == state[1] == 1
    assert [(r.id, r.state) for r in _all(workspace, ReviewItem)] == [
        (r.id, r.state) for r in state[2]
    ]
    assert load_cycle(workspace, cycle_id).outputs["selection"] == recorded

    # Another cycle is a new selection: the accepted labels are already current ("kept").
    other = start_cycle(workspace, workspace.settings.learning)
    current = {data.pool_ids[0]: ("a", 0.9), data.pool_ids[1]: ("b", 0.9)}
    data.pool_current = PoolLabels.of(data.pool_ids, current, data.classes)
    again = write_selection(workspace, other, data, outcome, summary)
    assert again == {"new": 0, "kept": 2, "retracted": 0, "review": 1}
    assert count(workspace, ReviewItem, ReviewItem.state == "open") == 1  # replaced


def test_labels_are_written_in_batches_with_their_evidence(workspace, monkeypatch) -> None:
    from flywheel.cycle import label_writer

    monkeypatch.setattr(label_writer, "WRITE_BATCH", 2)  # five rows: three batches
    decisions = [Decision.ACCEPTED] * 3 + [Decision.REJECTED] * 3
    data, outcome = _tiny_selection(workspace, decisions)
    # 0 keeps its label, 1 changes class, 3 and 4 lose theirs, 5 never had one.
    current = {data.pool_ids[i]: ("a", 0.9) for i in (0, 1, 3, 4)}
    data.pool_current = PoolLabels.of(data.pool_ids, current, data.classes)
    cycle_id = start_cycle(workspace, workspace.settings.learning)
    counts = write_selection(workspace, cycle_id, data, outcome, {"n": 1})
    assert counts == {"new": 2, "kept": 1, "retracted": 2, "review": 0}
    rows = sorted(_all(workspace, Label), key=lambda lab: lab.sample_id)
    assert [(r.sample_id[-1], r.label, r.retracted, r.confidence) for r in rows] == [
        ("1", "b", False, pytest.approx(0.9)),
        ("2", "a", False, pytest.approx(0.9)),
        ("3", "a", True, 0.0),
        ("4", "a", True, 0.0),
    ]
    assert all(r.cycle_id == cycle_id and r.source == "pseudo" for r in rows)
    assert rows[0].evidence["decision"] == "accepted" and rows[2].evidence["decision"] == "rejected"
    assert all(r.created_at is not None for r in rows)


@pytest.mark.parametrize(
    "decisions", [DECISIONS, DECISIONS[:2]], ids=["with-review", "labels-only"]
)
def test_write_selection_racing_duplicates_write_once(workspace, decisions) -> None:
    """Deliveries of the same select step writing at the same moment: one writes, the
    others get its counts (on SQLite too, where FOR UPDATE locks nothing)."""
    data, outcome = _tiny_selection(workspace, decisions)
    cycle_id = start_cycle(workspace, workspace.settings.learning)
    racers = 4
    start = threading.Barrier(racers)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def race() -> None:
        try:
            start.wait()
            results.append(write_selection(workspace, cycle_id, data, outcome, {"n": 1}))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == racers and all(r == results[0] for r in results)
    reviews = decisions.count(Decision.NEEDS_REVIEW)
    assert results[0] == {"new": 2, "kept": 0, "retracted": 0, "review": reviews}
    assert count(workspace, Label, Label.cycle_id == cycle_id) == 2
    assert count(workspace, ReviewItem, ReviewItem.cycle_id == cycle_id) == reviews


# --- 4. train died after registering its model -----------------------------------------------
def test_train_rejudges_a_registered_model_instead_of_training_again(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    first = run_cycle(ws, registry, ws.settings.learning)
    c2 = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, c2)
    run_select_step(ws, registry, c2)
    out = run_train_step(ws, registry, c2)
    cycle = load_cycle(ws, c2)
    metrics, run_id = cycle.metrics, cycle.mlflow_run_id
    models = len(registry.versions())
    assert registry.get(out["model_version"]).tags["cycle_id"] == str(c2)
    assert metrics["champion_accuracy"] == pytest.approx(first.metrics["test_accuracy"])

    # The worker died after log_model, before its run closed and before outputs["train"].
    registry.client.update_run(run_id, status="RUNNING")
    outputs = dict(cycle.outputs)
    del outputs["train"]
    update_cycle(ws, c2, outputs=outputs, metrics={})

    again = run_train_step(ws, registry, c2)
    assert again == out
    assert len(registry.versions()) == models  # no second model
    cycle = load_cycle(ws, c2)
    assert cycle.outputs["train"] == out
    assert cycle.mlflow_run_id == run_id  # no new MLflow run either
    assert cycle.metrics["model_version"] == out["model_version"]
    assert cycle.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert cycle.metrics["test_ece"] == pytest.approx(metrics["test_ece"])
    assert cycle.metrics["gate"] == metrics["gate"]
    assert cycle.metrics == metrics  # the same model on the same test split: the same numbers
    # The dead attempt's run is closed: the model it logged is complete, so it finished.
    assert run_status(registry, run_id) == "FINISHED"

    result = run_finish_step(ws, registry, c2)
    assert result.model_version == out["model_version"]
    assert result.state == ("promoted" if out["promote"] else "rejected")


# --- 5. train died before registering ----------------------------------------------------------
def test_train_retry_kills_the_dead_attempts_open_run(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    cycle_id = start_cycle(ws, ws.settings.learning)
    run_consensus_step(ws, cycle_id)
    run_select_step(ws, registry, cycle_id)
    # A train attempt opened its run, recorded it on the cycle, then died mid-training.
    dead = registry.client.create_run(registry._experiment_id(), run_name=f"cycle-{cycle_id}")
    dead_id = dead.info.run_id
    assert run_status(registry, dead_id) == "RUNNING"
    update_cycle(ws, cycle_id, mlflow_run_id=dead_id)
    assert registry.versions() == []

    out = run_train_step(ws, registry, cycle_id)
    assert run_status(registry, dead_id) == "KILLED"
    cycle = load_cycle(ws, cycle_id)
    assert cycle.mlflow_run_id not in (None, dead_id)
    assert run_status(registry, cycle.mlflow_run_id) == "FINISHED"
    [model] = registry.versions()
    assert model.version == out["model_version"] and model.run_id == cycle.mlflow_run_id
    assert model.tags["cycle_id"] == str(cycle_id)
    # Retrying again changes nothing: the step's output is recorded.
    assert run_train_step(ws, registry, cycle_id) == out
    assert run_status(registry, cycle.mlflow_run_id) == "FINISHED"
    assert len(registry.versions()) == 1


# --- 6. steps out of order -----------------------------------------------------------------
def test_steps_out_of_order_are_refused(workspace) -> None:
    registry = ModelRegistry.from_settings(workspace.settings)
    cycle_id = start_cycle(workspace, workspace.settings.learning)
    with pytest.raises(InvalidInputError, match=f"cycle {cycle_id} has no selection yet"):
        run_train_step(workspace, registry, cycle_id)
    with pytest.raises(InvalidInputError, match=f"cycle {cycle_id} has no trained model yet"):
        run_finish_step(workspace, registry, cycle_id)
    # A selection summary without its dataset version is not a finished select step.
    record_output(workspace, cycle_id, "selection", {"accepted": 0})
    with pytest.raises(InvalidInputError, match="run its select step"):
        run_train_step(workspace, registry, cycle_id)
    assert registry.versions() == []
    row = load_cycle(workspace, cycle_id)
    assert row.state == "queued" and row.mlflow_run_id is None
    for step in (run_consensus_step,):
        with pytest.raises(NotFoundError, match="no cycle 999"):
            step(workspace, 999)
    with pytest.raises(NotFoundError, match="no cycle 999"):
        run_select_step(workspace, registry, 999)
    with pytest.raises(NotFoundError, match="no cycle 999"):
        run_train_step(workspace, registry, 999)
    with pytest.raises(NotFoundError, match="no cycle 999"):
        run_finish_step(workspace, registry, 999)


# --- 7. the cycle's own learning settings ----------------------------------------------------
def test_steps_use_the_learning_settings_the_cycle_was_queued_with(ws, registry) -> None:
    ingest_digits(ws, N_DIGITS)
    queued = ws.settings.learning.model_copy(update={"train_epochs": 3, "fixmatch_epochs": 2})
    later = ws.settings.learning.model_copy(update={"train_epochs": 1, "fixmatch_epochs": 1})
    cycle_id = start_cycle(ws, queued)
    assert load_cycle(ws, cycle_id).params == queued.model_dump()

    # The engineer changed the settings after queueing; the cycle keeps its own.
    result = run_cycle(ws, registry, later, cycle_id=cycle_id)
    assert result.cycle_id == cycle_id
    cycle = load_cycle(ws, cycle_id)
    assert cycle.params == queued.model_dump()
    run = registry.client.get_run(cycle.mlflow_run_id)
    assert run.data.params["train_epochs"] == "3"
    assert run.data.params["fixmatch_epochs"] == "2"
    assert run.data.params["cycle_id"] == str(cycle_id)
    # The first cycle bootstraps with FixMatch: it trained the queued 2 epochs, not 1.
    losses = registry.client.get_metric_history(cycle.mlflow_run_id, "train_loss")
    assert sorted(m.step for m in losses) == [1, 2]


# --- 8. the select step keeps the chosen embedding -------------------------------------------
def test_select_step_saves_the_chosen_embedding_of_every_sample(ws, registry) -> None:
    from flywheel.learn.data import load_cycle_data
    from flywheel.learn.embeddings import loo_knn_accuracy
    from flywheel.learn.snapshots import latest_embeddings, load_embeddings

    ingest_digits(ws, N_DIGITS)
    assert latest_embeddings(ws) is None
    c1 = start_cycle(ws, ws.settings.learning)
    assert load_embeddings(ws, c1) is None
    run_consensus_step(ws, c1)
    run_select_step(ws, registry, c1)
    selection = load_cycle(ws, c1).outputs["selection"]

    snap = load_embeddings(ws, c1)
    assert snap is not None and snap.cycle_id == c1
    assert snap.name == selection["embedding"]
    data = load_cycle_data(ws.db, ws.blobs, None, 1)
    assert snap.ids.tolist() == data.labeled.ids + data.pool_ids + data.test.ids
    sizes = {
        "labeled": len(data.labeled.ids),
        "pool": len(data.pool_ids),
        "test": len(data.test.ids),
    }
    assert {s: int((snap.split == s).sum()) for s in sizes} == sizes
    assert snap.vectors.dtype == np.float32 and len(snap.vectors) == len(snap.ids)
    np.testing.assert_allclose(np.linalg.norm(snap.vectors, axis=1), 1.0, atol=1e-5)
    # Stored as one byte a character (a million ids: 64 MB, not 256 MB), read back as str.
    fs, path = ws.cycle_file(c1, "embeddings.npz")
    with np.load(io.BytesIO(read_bytes(fs, path))) as stored:
        assert stored["ids"].dtype == np.dtype("S64") and stored["split"].dtype.kind == "S"
    assert snap.ids.dtype.kind == "U" and snap.split.dtype.kind == "U"
    # The very vectors the cycle judged: their leave-one-out score is the recorded one.
    labeled = snap.vectors[snap.split == "labeled"]
    score = loo_knn_accuracy(labeled, data.labeled.labels)
    assert score == pytest.approx(selection["embedding_scores"][snap.name])

    # A newer cycle without a select step yet: the newest artifact is still cycle 1's.
    c2 = start_cycle(ws, ws.settings.learning)
    newest = latest_embeddings(ws)
    assert newest is not None and newest.cycle_id == c1 and c2 > c1


# --- 9. the train step teaches the pool from the cycle's embedding ---------------------------
def test_train_step_teaches_the_pool_from_the_embedding_it_selected_with(ws, registry) -> None:
    from flywheel.learn.data import load_cycle_data
    from flywheel.learn.snapshots import load_embeddings
    from flywheel.learn.ssl.embed import embed
    from flywheel.select.teacher import propagation_teacher

    ingest_digits(ws, N_DIGITS)
    learning = ws.settings.learning.model_copy(update={"teacher": "propagation"})
    first = run_cycle(ws, registry, learning)
    cycle = load_cycle(ws, first.cycle_id)
    snap = load_embeddings(ws, first.cycle_id)
    assert snap is not None
    data = load_cycle_data(ws.db, ws.blobs, None, 1)
    expected = propagation_teacher(
        snap.vectors[snap.split == "labeled"],
        snap.vectors[snap.split == "pool"],
        data.labeled.labels,
        data.num_classes,
        learning,
        "teacher: propagation",
        snap.name,
    )
    assert cycle.metrics["teacher"] == expected.summary()
    assert cycle.metrics["teacher"]["pool"] == len(data.pool_ids)
    params = registry.client.get_run(cycle.mlflow_run_id).data.params
    assert params["teacher"] == "propagation"
    assert params["teacher_heldout_accuracy"] == str(expected.heldout_accuracy)

    # Over the features of the champion the next cycle continues from, when asked.
    champion = registry.champion()
    assert champion is not None
    features = registry.load(champion.version).backbone
    on_champion = learning.model_copy(update={"teacher_features": "champion"})
    second = load_cycle(ws, run_cycle(ws, registry, on_champion).cycle_id)
    assert second.metrics["started_from"] == f"champion {champion.version}"
    expected = propagation_teacher(
        embed(features, data.labeled.images),
        embed(features, data.pool_images),
        data.labeled.labels,
        data.num_classes,
        on_champion,
        "teacher: propagation",
        "champion",
    )
    assert second.metrics["teacher"] == expected.summary()

    # The default asks the labels: every class has several, so selection can be certified
    # and the pool is not taught; the reason says so.
    assert ws.settings.learning.teacher == "auto"
    auto = load_cycle(ws, run_cycle(ws, registry, ws.settings.learning).cycle_id)
    assert auto.metrics["teacher"]["reason"].startswith("auto: every class has at least 2")
    assert "teacher_heldout_accuracy" not in registry.client.get_run(auto.mlflow_run_id).data.params
    off = run_cycle(ws, registry, learning.model_copy(update={"teacher": "none"}))
    assert load_cycle(ws, off.cycle_id).metrics["teacher"] == {"reason": "teacher: none"}


# --- 10. a pretrained start, from the blob store ----------------------------------------------
def test_a_cycle_starts_from_pretrained_weights_and_records_them(ws, registry) -> None:
    import io

    import torch

    from flywheel.learn.backbones import build_backbone

    ingest_digits(ws, N_DIGITS)
    # an earlier model's backbone, as a team would keep it: grey digits, small CNN
    earlier = build_backbone("small_cnn", 1, None, ws.settings.learning.width)
    buf = io.BytesIO()
    torch.save({"state_dict": earlier.state_dict()}, buf)
    sha = ws.blobs.put(buf.getvalue()).sha256
    learning = ws.settings.learning.model_copy(update={"pretrained": f"blob:{sha}"})
    cycle = load_cycle(ws, run_cycle(ws, registry, learning).cycle_id)
    recorded = cycle.outputs["selection"]["pretrained"]
    assert recorded["sha256"] == sha and recorded["source"] == f"blob:{sha}"
    total = len([k for k in earlier.state_dict() if not k.endswith("num_batches_tracked")])
    assert recorded["matched"] == f"{total}/{total} tensors"
    params = registry.client.get_run(cycle.mlflow_run_id).data.params
    assert params["pretrained"] == f"blob:{sha}" and params["pretrained_sha256"] == sha

    wrong = learning.model_copy(update={"pretrained": "blob:" + "0" * 64})
    with pytest.raises(NotFoundError):
        run_cycle(ws, registry, wrong)
