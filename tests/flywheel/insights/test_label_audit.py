"""Label audit: confident learning by hand, against cleanlab, and on a real workspace."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sqlalchemy import select

from flywheel.cycle.state import start_cycle
from flywheel.db import Label, ReviewItem
from flywheel.db.models import ReviewReason
from flywheel.feedback.review import decide_review, list_review
from flywheel.insights.label_audit import (
    audit_labels,
    confident_joint,
    confident_thresholds,
    find_label_issues,
    out_of_sample_probs,
    queue_audit_for_review,
    rank_by_self_confidence,
)
from flywheel.learn.data import CycleData, load_cycle_data
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import choose_embedding
from flywheel.learn.snapshots import save_embeddings
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace

# 3 classes, 8 samples: sample 2 is labeled 0 but looks like 1, sample 5 is labeled 1 but
# looks like 2; sample 7 is a doubtful 2 that no class claims with confidence.
HAND_PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.80, 0.10, 0.10],
        [0.10, 0.80, 0.10],
        [0.10, 0.80, 0.10],
        [0.20, 0.70, 0.10],
        [0.05, 0.15, 0.80],
        [0.10, 0.10, 0.80],
        [0.20, 0.10, 0.70],
    ]
)
HAND_LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2])


def test_confident_learning_by_hand() -> None:
    # t_k: mean probability of k over the samples labeled k.
    np.testing.assert_allclose(
        confident_thresholds(HAND_PROBS, HAND_LABELS),
        [(0.9 + 0.8 + 0.1) / 3, (0.8 + 0.7 + 0.15) / 3, (0.8 + 0.7) / 2],
    )
    # Thresholds 0.6 / 0.55 / 0.75. Sample 2: p1 = .8 >= .55 -> (given 0, true 1). Sample 5:
    # p2 = .8 >= .75 -> (1, 2). Sample 7: p2 = .7 < .75 and no other class clears its
    # threshold -> not counted. Everyone else lands on the diagonal.
    raw = confident_joint(HAND_PROBS, HAND_LABELS, calibrate=False)
    assert raw.tolist() == [[2, 1, 0], [0, 2, 1], [0, 0, 1]]
    # Calibrated: row k scaled to the 3 / 3 / 2 samples labeled k (total 8 already).
    assert confident_joint(HAND_PROBS, HAND_LABELS).tolist() == [[2, 1, 0], [0, 2, 1], [0, 0, 2]]
    # Prune: one (0 -> 1) sample, the largest p1 - p0 among those labeled 0 (sample 2), and
    # one (1 -> 2) sample, the largest p2 - p1 among those labeled 1 (sample 5).
    mask = find_label_issues(HAND_PROBS, HAND_LABELS)
    assert np.flatnonzero(mask).tolist() == [2, 5]
    # Worst first: sample 5 gives its label .15, sample 2 gives its label .1.
    assert rank_by_self_confidence(HAND_PROBS, HAND_LABELS, mask).tolist() == [2, 5]
    assert rank_by_self_confidence(HAND_PROBS, HAND_LABELS)[:3].tolist() == [2, 5, 4]


def test_a_class_is_never_emptied_and_argmax_agreement_is_not_an_issue() -> None:
    # All three samples labeled 0 look like 1 (thresholds: t0 = .15, t1 = .8). Samples 0-2
    # count as (0 -> 1): 0 clears only t1, 1 and 2 clear both and their argmax is 1. Sample 4
    # (p0 = .3 >= .15, p1 = .7 < .8) counts as (1 -> 0). C[0][0] is raised to 1, so no class
    # is emptied: calibrated, row 0 = [1, 3] * 3/4 = [.75, 2.25] -> [1, 2].
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.15, 0.85], [0.1, 0.9], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 1, 1])
    assert confident_joint(probs, labels, calibrate=False).tolist() == [[1, 3], [1, 1]]
    assert confident_joint(probs, labels).tolist() == [[1, 2], [1, 1]]
    # Two of the three 0s go (largest p1 - p0: samples 0 and 2); one (1 -> 0) sample would
    # go (sample 4), but its given label is still its most probable one: not an issue.
    assert np.flatnonzero(find_label_issues(probs, labels)).tolist() == [0, 2]


def test_same_mask_as_cleanlab_on_random_problems() -> None:
    import cleanlab.filter as cleanlab  # a dev dependency: the reference implementation

    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(200):
        n, k = int(rng.integers(5, 200)), int(rng.integers(2, 7))
        labels = rng.integers(0, k, n)
        if len(np.unique(labels)) < k:
            continue
        logits = rng.normal(0, 2, (n, k))
        logits[np.arange(n), labels] += rng.uniform(0, 4)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        with warnings.catch_warnings():  # cleanlab warns about small classes
            warnings.simplefilter("ignore")
            theirs = cleanlab.find_label_issues(labels, probs, n_jobs=1)
        np.testing.assert_array_equal(find_label_issues(probs, labels), theirs)
        compared += 1
    assert compared > 100


def test_out_of_sample_probs_judge_each_sample_without_its_own_label() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    labels = np.repeat([0, 1, 2], 30)
    x = centres[labels] + rng.normal(0, 1.0, (90, 2))
    noisy = labels.copy()
    noisy[[3, 40]] = [1, 2]  # two flipped labels
    probs = out_of_sample_probs(x, noisy, 3, folds=5)
    assert probs.shape == (90, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Out of sample, the flipped samples' given labels get almost nothing.
    assert probs[3, 1] < 0.25 and probs[40, 2] < 0.25
    assert (probs.argmax(axis=1) == labels).mean() > 0.95
    assert sorted(rank_by_self_confidence(probs, noisy)[:2].tolist()) == [3, 40]
    assert set(np.flatnonzero(find_label_issues(probs, noisy))) <= {3, 40}


def test_out_of_sample_probs_with_tiny_classes() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (23, 4))
    # Class 1 has 2 samples (< 5 folds), class 2 a single one.
    labels = np.array([0] * 20 + [1, 1, 2])
    x[20:22] += 5.0
    x[22] -= 5.0
    probs = out_of_sample_probs(x, labels, 4, folds=5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, 3] == 0).all()  # a class nobody has
    # Each class-1 sample was judged by a model that saw the other one.
    assert (probs[20:22, 1] > 0.5).all()
    # The lone class-2 sample cannot be judged out of sample: not flagged for being alone.
    assert probs[22, 2] > 0.5
    assert not find_label_issues(probs, labels)[22]
    assert out_of_sample_probs(x[:3], np.array([0, 0, 0]), 2).tolist() == [[1, 0]] * 3


# --- the workspace ---------------------------------------------------------------------------
def embedded_digits(ws: Workspace, n: int = 500, labels_per_class: int = 20) -> CycleData:
    """Digits ingested and a cycle's embeddings artifact written as its select step does
    (no SSL model: the PCA embedding), without training anything."""
    plan = SplitPlan(labels_per_class=labels_per_class, test_fraction=0.3, seed=0)
    ingest_candidates(ws.db, ws.blobs, digits_candidates()[:n], "digits", ws.settings.ingest, plan)
    data = load_cycle_data(ws.db, ws.blobs, None, 1)
    parts = ("labeled", "pool", "test")
    images = {"labeled": data.labeled.images, "pool": data.pool_images, "test": data.test.images}
    ids = {"labeled": data.labeled.ids, "pool": data.pool_ids, "test": data.test.ids}
    cache = EmbeddingStore(ws.settings.storage_root)
    choice = choose_embedding({}, {p: images[p] for p in parts}, ids, data.labeled.labels, cache)
    save_embeddings(ws, start_cycle(ws, ws.settings.learning), choice, data)
    return data


def flip_labels(ws: Workspace, data: CycleData, count: int, source: str = "human") -> dict:
    """``count`` labeled samples get a newer, wrong label; sample id -> (wrong, true)."""
    rng = np.random.default_rng(0)
    picked = rng.choice(len(data.labeled.ids), count, replace=False)
    out = {}
    with ws.db.session() as s:
        for i in picked:
            true = int(data.classes[data.labeled.labels[i]])
            wrong = str((true + int(rng.integers(1, 10))) % 10)
            sid = data.labeled.ids[i]
            s.add(Label(sample_id=sid, label=wrong, source=source, method="t", annotator="mallory"))
            out[sid] = (wrong, str(true))
    return out


def test_audit_without_embeddings_is_empty(workspace) -> None:
    report = audit_labels(workspace)
    assert (report.issues, report.checked, report.cycle_id) == ([], 0, None)
    assert queue_audit_for_review(workspace, report) == 0


def test_audit_finds_flipped_labels_worst_first(workspace) -> None:
    data = embedded_digits(workspace)
    flipped = flip_labels(workspace, data, 8)
    report = audit_labels(workspace)
    assert report.cycle_id == 1 and report.embedding == "pca"
    assert report.classes == [str(c) for c in range(10)]
    # Every seed/human label on an embedded sample: the train labels and the test split.
    assert report.checked == len(data.labeled.ids) + len(data.test.ids)
    found = [i for i in report.issues if i.sample_id in flipped]
    assert len(found) >= 6  # of 8 (measured: 6; 4 of the 8 flips land in the top 4)
    assert all(i.sample_id in flipped for i in report.issues[:4])
    assert len(report.issues) <= 2 * len(found)  # and not buried in false alarms
    confidences = [i.self_confidence for i in report.issues]
    assert confidences == sorted(confidences)
    for issue in found:
        assert (issue.given, issue.source, issue.annotator) == (
            flipped[issue.sample_id][0],
            "human",
            "mallory",
        )
        assert issue.suggested != issue.given and issue.suggested_prob > issue.self_confidence
    assert sum(i.suggested == flipped[i.sample_id][1] for i in found) >= len(found) - 1

    # Seed labels only: the flipped samples' current labels are human, so not audited.
    seeds = audit_labels(workspace, sources=("seed",))
    assert seeds.checked == report.checked - len(flipped)
    assert not {i.sample_id for i in seeds.issues} & set(flipped)


def test_audit_items_in_the_review_queue(workspace) -> None:
    data = embedded_digits(workspace)
    flipped = flip_labels(workspace, data, 8, source="feedback")
    report = audit_labels(workspace)
    opened = queue_audit_for_review(workspace, report)
    assert opened == len(report.issues) > 0
    assert queue_audit_for_review(workspace, report) == 0  # all open already
    page = list_review(workspace.db, limit=1000)
    assert page.total == opened
    by_sample = {r.sample_id: r for r in page.items}
    worst = report.issues[0]
    item = by_sample[worst.sample_id]
    assert (item.reason, item.proposed_label, item.cycle_id) == (
        ReviewReason.LABEL_AUDIT,
        worst.suggested,
        None,
    )
    assert item.score == pytest.approx(worst.suggested_prob)
    assert item.evidence["given"] == worst.given and item.evidence["source"] == "feedback"
    assert item.evidence["annotator"] == "mallory" and item.evidence["embedding"] == "pca"
    assert item.evidence["self_confidence"] == pytest.approx(worst.self_confidence, abs=1e-5)

    # Accept: a human label with the suggestion. Reject: the feedback label stands.
    accepted, rejected = report.issues[0], report.issues[1]
    classes = report.classes
    decide_review(workspace.db, by_sample[accepted.sample_id].id, "accept", "rita", None, classes)
    decide_review(workspace.db, by_sample[rejected.sample_id].id, "reject", "rita", None, classes)
    with workspace.db.session() as s:

        def newest(sid: str) -> Label:
            return s.scalars(
                select(Label).where(Label.sample_id == sid).order_by(Label.id.desc())
            ).first()

        now = newest(accepted.sample_id)
        assert (now.source, now.label, now.annotator) == ("human", accepted.suggested, "rita")
        kept = newest(rejected.sample_id)
        assert (kept.source, kept.label, kept.retracted) == ("feedback", rejected.given, False)
    assert accepted.sample_id in flipped

    # The next audit does not re-queue what a reviewer already ruled on.
    again = audit_labels(workspace)
    assert rejected.sample_id in {i.sample_id for i in again.issues}  # same label, same doubt
    reopened = queue_audit_for_review(workspace, again)
    with workspace.db.session() as s:
        audits = s.scalars(
            select(ReviewItem).where(ReviewItem.reason == ReviewReason.LABEL_AUDIT)
        ).all()
        newer = {r.sample_id for r in audits if r.id > max(by_sample[x].id for x in by_sample)}
    assert len(audits) == opened + reopened
    # (A relabeled sample changes the folds: a new doubt elsewhere may be queued.)
    assert not newer & {accepted.sample_id, rejected.sample_id}
