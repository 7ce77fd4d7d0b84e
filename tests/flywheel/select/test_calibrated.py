"""Pseudo-label selection: planted decisions and evidence, caps, input checks."""

from dataclasses import replace

import numpy as np
import pytest

from flywheel.errors import InvalidInputError
from flywheel.select.calibrated import SelectionConfig, knn_vote, select_pseudo_labels
from flywheel.select.result import Decision

E = np.eye(4, dtype=np.float32)


def _planted():
    """3 classes on axes e0..e2 (two labeled rows each); pool rows A, B, C with known fates.

    A sits between labeled rows 0 and 1 (class 0) and the classifier agrees -> accepted.
    B sits on class 1's rows but the classifier is sure of class 2 -> review, label 1.
    C has no labeled row at positive cosine (uniform vote), classifier unsure -> rejected.
    """
    labeled = np.stack([E[0] + 0.1 * E[1], E[0] + 0.1 * E[2], E[1], E[1] + 0.2 * E[3], E[2], E[2]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    pool = np.stack([E[0], E[1] + 0.05 * E[3], -E[0]])
    pool_probs = np.array([[0.98, 0.01, 0.01], [0.005, 0.005, 0.99], [0.4, 0.3, 0.3]])
    # Held-out calibration set: 30 rows per class on their axes, classifier confident & right.
    calib = np.repeat(E[:3], 30, axis=0) + 0.01 * np.tile(E[3], (90, 1))
    calib_labels = np.repeat(np.arange(3), 30)
    calib_probs = np.full((90, 3), 0.01)
    calib_probs[np.arange(90), calib_labels] = 0.98
    return pool, pool_probs, labeled, labels, calib, calib_probs, calib_labels


def test_planted_example_decisions_and_evidence():
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    r = select_pseudo_labels(*_planted(), num_classes=3, config=config)
    assert r.decision.tolist() == [Decision.ACCEPTED, Decision.NEEDS_REVIEW, Decision.REJECTED]
    assert r.label[:2].tolist() == [0, 1]
    # Evidence for A: labeled rows 0 and 1, both at cosine 1/sqrt(1.01) (hand-computed).
    assert sorted(r.neighbor_ids[0].tolist()) == [0, 1]
    np.testing.assert_allclose(r.neighbor_sims[0], 1 / np.sqrt(1.01), atol=1e-6)
    assert r.neighbor_ids[1].tolist() == [2, 3]
    np.testing.assert_allclose(
        r.neighbor_sims[1], [1 / np.sqrt(1.0025), 1.01 / np.sqrt(1.04 * 1.0025)], atol=1e-6
    )
    np.testing.assert_allclose(r.knn_share[:2], 1.0, atol=1e-6)
    np.testing.assert_allclose(r.classifier_prob[:2], [0.98, 0.005], atol=1e-6)
    # Product of experts, weight 0.5: score(A) = sqrt(.98) / (sqrt(.98) + 2 sqrt(.01 * 1e-4)).
    expected = np.sqrt(0.98) / (np.sqrt(0.98) + 2 * np.sqrt(0.01 * 1e-4))
    assert r.score[0] == pytest.approx(expected, abs=1e-5)
    assert r.score[0] >= r.thresholds[0] and r.score[1] < r.thresholds[1]
    assert r.counts == {"pool": 3, "accepted": 1, "needs_review": 1, "rejected": 1, "capped": 0}
    assert r.accepted_per_class.tolist() == [1, 0, 0]


def test_neighbours_kept_for_the_written_rows_only_are_the_same():
    """A million pool samples' neighbours are not kept: the strategy finds them again for
    the rows it writes, and they are those the whole pool's search found."""
    from flywheel.learn.index import build_index
    from flywheel.select.calibrated import with_neighbours

    pool, pool_probs, labeled, labels, *rest = _planted()
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    args = (pool, pool_probs, labeled, labels, *rest)
    whole = select_pseudo_labels(*args, num_classes=3, config=config)
    anchors = build_index(labeled, "flat")  # the caller's: built once for votes and evidence
    lean = select_pseudo_labels(
        *args, num_classes=3, config=config, keep_neighbours=False, index=anchors
    )
    assert lean.neighbor_ids.shape == (0, 2)
    np.testing.assert_array_equal(lean.decision, whole.decision)
    np.testing.assert_array_equal(lean.score, whole.score)
    lean = with_neighbours(lean, np.array([0, 1]), anchors, pool, 2)
    for i in (0, 1):
        ids, sims = lean.neighbours_of(i)
        np.testing.assert_array_equal(ids, whole.neighbor_ids[i])
        np.testing.assert_allclose(sims, whole.neighbor_sims[i], atol=1e-6)
    assert len(lean.neighbours_of(2)[0]) == 0  # rejected, never written: none kept


def test_the_pool_in_chunks_decides_as_in_one(monkeypatch):
    """The pool is voted and combined chunk by chunk (memory); rows are independent, so a
    chunk of one row gives the same result, field by field, as the whole pool at once."""
    import flywheel.select.calibrated as calibrated

    rng = np.random.default_rng(0)
    pool, pool_probs, *rest = _planted()
    pool = np.concatenate([pool, pool + 0.2 * rng.random(pool.shape)])
    pool_probs = np.concatenate([pool_probs, pool_probs[::-1]])
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    whole = select_pseudo_labels(pool, pool_probs, *rest, num_classes=3, config=config)
    monkeypatch.setattr(calibrated, "POOL_CHUNK", 1)
    chunked = select_pseudo_labels(pool, pool_probs, *rest, num_classes=3, config=config)
    for name in ("decision", "label", "score", "classifier_prob", "knn_share"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), name)
    np.testing.assert_array_equal(chunked.neighbor_ids, whole.neighbor_ids)
    np.testing.assert_array_equal(chunked.neighbor_sims, whole.neighbor_sims)
    assert chunked.counts == whole.counts


def test_mean_combination_and_leave_one_out_mode():
    pool, pool_probs, labeled, labels, *_ = _planted()
    oof = np.full((6, 3), 0.1)
    oof[np.arange(6), labels] = 0.8
    config = SelectionConfig(k=1, combination="mean", review_band=0.0, max_class_ratio=None)
    r = select_pseudo_labels(pool, pool_probs, labeled, labels, None, oof, None, 3, config)
    # Mean of experts for A: 0.5 * 0.98 + 0.5 * 1.0.
    assert r.score[0] == pytest.approx(0.99, abs=1e-6)
    assert r.neighbor_ids.shape == (3, 1)
    # Leave-one-out: every labeled row's nearest *other* row has its class, so all are correct.
    assert r.calibration.n_calibration.tolist() == [2, 2, 2]


def test_knn_vote_weights_by_similarity_and_ignores_missing():
    sims = np.array([[0.9, 0.5, -0.2], [0.8, 0.0, 0.0]], dtype=np.float32)
    ids = np.array([[0, 1, 2], [1, -1, -1]])
    vote = knn_vote(sims, ids, np.array([0, 1, 1]), num_classes=2, power=1.0)
    np.testing.assert_allclose(vote, [[0.9 / 1.4, 0.5 / 1.4], [0.0, 1.0]], atol=1e-6)


def _cap_case():
    """Class 0 is easy (100 confident pool rows), class 1 has 10: caps must rein class 0 in."""
    rng = np.random.default_rng(0)
    labeled = np.concatenate([np.tile(E[0], (5, 1)), np.tile(E[1], (5, 1))]) + 0.01
    labels = np.repeat([0, 1], 5)
    pool = np.concatenate([np.tile(E[0], (100, 1)), np.tile(E[1], (10, 1))])
    pool = pool + 0.01 * rng.random(pool.shape).astype(np.float32)
    conf = np.concatenate([np.linspace(0.95, 0.999, 100), np.full(10, 0.99)])
    truth = np.repeat([0, 1], [100, 10])
    probs = np.empty((110, 2))
    probs[np.arange(110), truth], probs[np.arange(110), 1 - truth] = conf, 1 - conf
    calib_probs = np.tile([[0.995, 0.005], [0.005, 0.995]], (20, 1))
    calib = np.tile(E[:2], (20, 1)) + 0.01
    return pool, probs, labeled, labels, calib, calib_probs, np.tile([0, 1], 20)


def test_class_ratio_cap_keeps_the_most_confident():
    r0 = select_pseudo_labels(*_cap_case(), 2, SelectionConfig(k=3, max_class_ratio=None))
    r = select_pseudo_labels(*_cap_case(), 2, SelectionConfig(k=3, max_class_ratio=1.2))
    total = r0.accepted_per_class.sum()
    assert r0.accepted_per_class[0] > 60  # without a cap class 0 floods the accepted set
    cap = int(np.ceil(1.2 * 0.5 * total))
    assert r.accepted_per_class[0] == cap and r.accepted_per_class[1] == r0.accepted_per_class[1]
    assert r.counts["capped"] == r0.accepted_per_class[0] - cap
    kept = r.score[(r.decision == Decision.ACCEPTED) & (r.label == 0)]
    dropped = r.score[r.capped]
    assert kept.min() >= dropped.max()
    assert np.all(r.decision[r.capped] == Decision.REJECTED)


def test_absolute_cap_and_review_budget():
    config = SelectionConfig(k=3, max_per_class=7, max_class_ratio=None, max_review=2)
    r = select_pseudo_labels(*_cap_case(), 2, config)
    assert r.accepted_per_class.max() <= 7 and r.counts["needs_review"] <= 2


def test_propagation_labels_clusters_and_cross_fits_calibration():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    truth = np.repeat(np.arange(3), 60)
    x = (centres[truth] + 0.1 * rng.normal(size=(180, 8))).astype(np.float32)
    lab = np.concatenate([np.flatnonzero(truth == c)[:5] for c in range(3)])
    pool = np.setdiff1d(np.arange(180), lab)
    uniform = lambda n: np.full((n, 3), 1 / 3)  # noqa: E731 - an uninformative classifier
    config = SelectionConfig(k=3, propagation=True, classifier_weight=0.0, propagation_folds=3)
    r = select_pseudo_labels(
        x[pool], uniform(len(pool)), x[lab], truth[lab], None, uniform(15), None, 3, config
    )
    assert np.all(r.label == truth[pool])
    assert np.all(r.knn_share > 0.9)
    assert r.calibration.n_calibration.tolist() == [5, 5, 5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pool_probs": np.full((3, 2), 0.5)}, r"pool_probs must have shape \(3, 3\)"),
        ({"pool_probs": np.full((3, 3), 0.5)}, "sum to 1"),
        ({"labeled_labels": np.array([0, 0, 1, 1, 2, 3])}, r"must lie in \[0, 3\)"),
        ({"labeled_labels": np.zeros(6)}, "integer class ids"),
        ({"labeled_labels": np.zeros(5, int)}, r"shape \(6,\)"),
        ({"calib_labels": None}, "together"),
        ({"labeled_embeddings": np.ones((6, 3), np.float32)}, "dimension 3"),
        ({"pool_embeddings": np.ones((3, 4), int)}, "floating dtype"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    names = [
        "pool_embeddings",
        "pool_probs",
        "labeled_embeddings",
        "labeled_labels",
        "calib_embeddings",
        "calib_probs",
        "calib_labels",
    ]
    args = dict(zip(names, _planted(), strict=True)) | change
    with pytest.raises(InvalidInputError, match=message):
        select_pseudo_labels(**args, num_classes=3)


def test_bad_config_is_refused():
    with pytest.raises(InvalidInputError, match="target_precision"):
        SelectionConfig(target_precision=1.0)
    with pytest.raises(InvalidInputError, match="classifier_weight"):
        SelectionConfig(classifier_weight=1.5)


def test_a_class_without_held_out_evidence_accepts_nothing():
    pool, pool_probs, labeled, labels, calib, calib_probs, calib_labels = _planted()
    # Only 2 held-out rows predicted as class 0: below the evidence floor of 3.
    keep = np.concatenate([np.flatnonzero(calib_labels == 0)[:2], np.arange(30, 90)])
    args = (pool, pool_probs, labeled, labels, calib[keep], calib_probs[keep], calib_labels[keep])
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    r = select_pseudo_labels(*args, num_classes=3, config=config)
    assert r.calibration.n_calibration.tolist() == [2, 30, 30]
    assert r.thresholds[0] == np.inf and r.decision[0] != Decision.ACCEPTED
    relaxed = select_pseudo_labels(*args, 3, replace(config, min_class_evidence=2))
    assert relaxed.decision[0] == Decision.ACCEPTED


def test_too_few_held_out_predictions_in_all_accept_nothing():
    pool, pool_probs, labeled, labels, calib, calib_probs, calib_labels = _planted()
    # 6 held-out rows a class: each class clears its floor of 3, but 18 in all are too few
    # for the shared score-to-precision fit (20).
    keep = np.concatenate([np.flatnonzero(calib_labels == c)[:6] for c in range(3)])
    args = (pool, pool_probs, labeled, labels, calib[keep], calib_probs[keep], calib_labels[keep])
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    r = select_pseudo_labels(*args, num_classes=3, config=config)
    assert r.calibration.n_calibration.tolist() == [6, 6, 6]
    assert np.isinf(r.thresholds).all() and (r.decision != Decision.ACCEPTED).all()
    relaxed = select_pseudo_labels(*args, 3, replace(config, min_total_evidence=18))
    assert relaxed.decision[0] == Decision.ACCEPTED


def test_the_review_queue_takes_disputed_and_near_threshold_items_not_duplicates():
    from flywheel.config import LearningSettings
    from flywheel.learn.embeddings import EmbeddingChoice
    from flywheel.select.calibrated import with_review_queue

    pool, pool_probs, labeled, labels, *calibration = _planted()
    config = SelectionConfig(k=2, review_band=0.5, max_class_ratio=None)
    r = select_pseudo_labels(pool, pool_probs, labeled, labels, *calibration, 3, config)
    # Pool: A (accepted), B (below threshold), C (far below). Add B's exact twin as D.
    twice = np.concatenate([pool, pool[1:2]])
    r = replace(
        r,
        **{
            f: np.concatenate([getattr(r, f), getattr(r, f)[1:2]])
            for f in ("decision", "label", "score", "classifier_prob", "knn_share")
        },
    )
    unit = twice / np.linalg.norm(twice, axis=1, keepdims=True)
    choice = EmbeddingChoice("ssl", "f", labeled, unit, unit[:0], {})
    disputed = np.array([True, False, False, False])  # the champion names another class for A
    other = np.array([0.9, 0.0, 0.0, 0.0])
    learning = LearningSettings(max_review=10)
    out = with_review_queue(r, disputed, other, choice, 0.5, learning)
    # A loses its acceptance to the dispute and is asked about; one of the twins B/D is.
    assert out.decision[0] == Decision.NEEDS_REVIEW
    assert out.counts["disputed_by_champion"] == 1 and out.counts["accepted"] == 0
    assert (out.decision[[1, 3]] == Decision.NEEDS_REVIEW).sum() == 1
    assert out.counts["review_disputed"] == 1
    # The queue's order and reasons travel with the result, for the evidence of each item.
    assert sorted(out.review_rank[out.review_rank >= 0].tolist()) == [0, 1]
    assert out.review_reason[0] == "disputed" and out.review_rank[2] == -1
    assert out.review_benefit[0] > 0
