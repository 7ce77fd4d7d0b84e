"""Review queue: uncertainty near the threshold, and a greedy ranking that skips duplicates."""

import math

import numpy as np
import pytest

from flywheel.errors import InvalidInputError
from flywheel.select.review_queue import ReviewPick, rank_for_review, review_uncertainty


def test_uncertainty_near_threshold_by_hand():
    # Class 0: threshold 0.8; class 1: +inf (accepts nothing, best score 0.6 is the reference);
    # class 2: 0.5; class 3: +inf with no sample (reference 1.0, touches no one). Band 0.2.
    threshold = np.array([0.8, np.inf, 0.5, np.inf])
    score = np.array([0.8, 0.9, 0.75, 0.7, 0.6, 0.5, 0.6, 0.45, 0.45, 0.2])
    label = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    expected = [
        0.0,  # at the threshold: accepted
        0.0,  # above it
        1 - 0.05 / 0.2,  # 0.75
        1 - 0.1 / 0.2,  # 0.5
        0.0,  # exactly band below: edge
        0.0,  # below the band
        1.0,  # best score of a +inf class: its reference
        1 - 0.15 / 0.2,  # 0.25
        1 - 0.05 / 0.2,  # 0.75
        0.0,
    ]
    u = review_uncertainty(score, threshold, label, 0.2)
    assert u.dtype == np.float64
    np.testing.assert_allclose(u, expected, atol=1e-12)
    np.testing.assert_array_equal(review_uncertainty(score, threshold, label, 0.0), 0.0)


def test_uncertainty_of_disputed_items_is_one_minus_the_gap():
    threshold = np.array([0.8, 0.8])
    score = np.array([0.7, 0.3, 0.7, 0.85])
    label = np.array([0, 0, 0, 1])
    disputed = np.array([True, True, False, True])
    other = np.array([0.6, 0.9, 0.7, 0.85])
    u = review_uncertainty(score, threshold, label, 0.2, disputed=disputed, other_score=other)
    # max(band 0.5, 1 - 0.1); max(0, 1 - 0.6); not disputed: band 0.5; equal confidence: 1.
    np.testing.assert_allclose(u, [0.9, 0.4, 0.5, 1.0], atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label": np.array([0, 2])}, "label"),
        ({"label": np.array([0.0, 1.0])}, "label"),
        ({"band": -0.1}, "band"),
        ({"score": np.array([0.5, np.nan])}, "finite"),
        ({"disputed": np.array([True, False])}, "together"),
        ({"disputed": np.array([1, 0]), "other_score": np.array([0.5, 0.5])}, "bool"),
    ],
)
def test_uncertainty_rejects_bad_input(kwargs, match):
    args = {
        "score": np.array([0.5, 0.6]),
        "threshold": np.array([0.7, 0.7]),
        "label": np.array([0, 1]),
        "band": 0.2,
    }
    with pytest.raises(InvalidInputError, match=match):
        review_uncertainty(**(args | kwargs))


def _rank(u, emb, labeled=None, max_review=10, candidates=None, disputed=None):
    n = len(u)
    return rank_for_review(
        np.ones(n, dtype=bool) if candidates is None else candidates,
        np.asarray(u, dtype=np.float64),
        np.zeros(n, dtype=bool) if disputed is None else disputed,
        np.asarray(emb, dtype=np.float32),
        np.zeros((0, np.shape(emb)[1]), np.float32) if labeled is None else labeled,
        max_review,
    )


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_near_duplicates_cost_one_review(noise):
    rng = np.random.default_rng(0)
    dupes = np.array([[1.0, 0.0, 0.0]] * 5) + noise * rng.standard_normal((5, 3))
    emb = np.vstack([[0.0, 1.0, 0.0], dupes])  # the distinct item first, then the cluster
    pick = _rank([0.8, 0.9, 0.9, 0.9, 0.9, 0.9], emb, max_review=2)
    # Step 1: a duplicate, 0.9 x 1 beats 0.8 x 1 (index 1 if identical: lowest on ties).
    # Step 2: the distinct item, 0.8 x 0.5 (orthogonal), beats the rest of the cluster (~0).
    assert pick.order[1] == 0 and 1 <= pick.order[0] <= 5
    if noise == 0.0:
        np.testing.assert_array_equal(pick.order, [1, 0])
        np.testing.assert_allclose(pick.benefit, [0.9, 0.4])
        # Exact copies of a queued item have zero benefit: the queue stops short.
        np.testing.assert_array_equal(_rank([0.8] + [0.9] * 5, emb).order, [1, 0])


def test_copy_of_a_labeled_item_is_not_picked():
    emb = np.eye(3)  # item 0 is the labeled point itself
    labeled = np.array([[1.0, 0.0, 0.0]], np.float32)
    pick = _rank([1.0, 0.3, 0.2], emb, labeled=labeled, max_review=3)
    np.testing.assert_array_equal(pick.order, [1, 2])
    np.testing.assert_allclose(pick.benefit, [0.3 * 0.5, 0.2 * 0.5])


def test_greedy_order_by_hand_on_the_circle():
    # Labeled point at 0 deg; pool at 90, 180, 270, 60 deg (scaled: rows are normalised).
    # distance = (1 - cos) / 2. Initial d: 0.5, 1, 0.5, 0.25; u: 0.5, 0.4, 0.6, 0.9.
    # 1) benefits .25 .4 .3 .225 -> item 1 (0.4); it covers nobody closer (cos 0, 0, -0.5).
    # 2) .25 .3 .225 -> item 2 (0.3); cos(270, 90) = -1, cos(270, 60) < 0: no change.
    # 3) .25 .225 -> item 0 (0.25); cos(90, 60) = sqrt(3)/2: d_3 = (1 - sqrt(3)/2) / 2.
    # 4) item 3: 0.9 * (1 - sqrt(3)/2) / 2.
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    emb = 2.0 * np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [c, s]])
    labeled = np.array([[1.0, 0.0]], np.float32)
    disputed = np.array([True, False, True, False])
    pick = _rank([0.5, 0.4, 0.6, 0.9], emb, labeled=labeled, disputed=disputed)
    assert isinstance(pick, ReviewPick)
    assert pick.order.dtype == np.int64
    np.testing.assert_array_equal(pick.order, [1, 2, 0, 3])
    np.testing.assert_allclose(pick.benefit, [0.4, 0.3, 0.25, 0.9 * (1 - s) / 2], rtol=1e-6)
    np.testing.assert_allclose(pick.uncertainty, [0.4, 0.6, 0.5, 0.9])
    assert pick.reason == ["near_threshold", "disputed", "disputed", "near_threshold"]


def test_ties_go_to_the_lowest_index():
    pick = _rank([0.5, 0.5, 0.5], np.eye(3), max_review=3)
    np.testing.assert_array_equal(pick.order, [0, 1, 2])
    np.testing.assert_allclose(pick.benefit, [0.5, 0.25, 0.25])


def test_zero_uncertainty_and_non_candidates_are_never_picked():
    candidates = np.array([True, True, False, True])
    pick = _rank([0.0, 0.5, 1.0, 0.2], np.eye(4), max_review=10, candidates=candidates)
    np.testing.assert_array_equal(pick.order, [1, 3])  # max_review > candidates: all of them
    assert pick.reason == ["near_threshold", "near_threshold"]


@pytest.mark.parametrize("max_review", [0, -3])
def test_no_quota_gives_an_empty_queue(max_review):
    pick = _rank([0.5, 0.5], np.eye(2), max_review=max_review)
    assert pick.order.shape == (0,) and pick.order.dtype == np.int64
    assert pick.benefit.shape == (0,) and pick.benefit.dtype == np.float64
    assert pick.uncertainty.shape == (0,) and pick.reason == []


def test_matches_a_brute_force_reference_across_chunks():
    rng = np.random.default_rng(3)
    n, m, dim = 7000, 40, 8  # more eligible rows than one labeled-set chunk
    pool = rng.standard_normal((n, dim)).astype(np.float32)
    labeled = rng.standard_normal((m, dim)).astype(np.float32)
    u = np.where(rng.random(n) < 0.3, 0.0, rng.random(n))
    pick = _rank(u, pool, labeled=labeled, max_review=25)

    x = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    lab = labeled / np.linalg.norm(labeled, axis=1, keepdims=True)
    d = ((1 - x.astype(np.float64) @ lab.T.astype(np.float64)) / 2).min(axis=1)
    order, gains = [], []
    for _ in range(25):
        gain = np.where(u > 0, u * d, -1.0)
        gain[order] = -1.0
        order.append(int(np.argmax(gain)))
        gains.append(gain[order[-1]])
        d = np.minimum(d, (1 - x.astype(np.float64) @ x[order[-1]].astype(np.float64)) / 2)
    np.testing.assert_array_equal(pick.order, order)
    np.testing.assert_allclose(pick.benefit, gains, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"uncertainty": np.array([0.5, 0.5])}, "uncertainty"),
        ({"uncertainty": np.array([0.5, 1.5, 0.1])}, "uncertainty"),
        ({"disputed": np.zeros(2, dtype=bool)}, "disputed"),
        ({"candidates": np.ones(3, dtype=np.int64)}, "candidates"),
        ({"pool_embeddings": np.eye(2, dtype=np.float32)}, "pool_embeddings"),
        ({"pool_embeddings": np.ones(3, dtype=np.float32)}, "pool_embeddings"),
        ({"pool_embeddings": np.eye(3, dtype=np.int64)}, "pool_embeddings"),
        ({"labeled_embeddings": np.zeros((1, 2), np.float32)}, "labeled_embeddings"),
        ({"labeled_embeddings": np.zeros((1, 3), np.float32)}, "labeled_embeddings"),
        ({"pool_embeddings": np.zeros((3, 3), np.float32)}, "pool_embeddings"),
    ],
)
def test_rank_rejects_bad_shapes(change, match):
    args = {
        "candidates": np.ones(3, dtype=bool),
        "uncertainty": np.array([0.5, 0.4, 0.1]),
        "disputed": np.zeros(3, dtype=bool),
        "pool_embeddings": np.eye(3, dtype=np.float32),
        "labeled_embeddings": np.zeros((0, 3), np.float32),
        "max_review": 2,
    }
    with pytest.raises(InvalidInputError, match=match):
        rank_for_review(**(args | change))


def test_a_pool_row_never_compared_may_be_zero_or_not_finite():
    # Rows 1 and 2 are no candidates: their vectors are never read, so they cannot fail
    # the ranking (it gathers the candidates' rows a block at a time).
    emb = np.array([[1, 0], [0, 0], [np.nan, 1], [0, 1]], dtype=np.float32)
    pick = _rank([0.9, 0.0, 0.8, 0.5], emb, candidates=np.array([True, False, False, True]))
    assert pick.order.tolist() == [0, 3]
    # benefit = u x distance to the covered: 0.9 x 1, then 0.5 x (1 - cos 90°) / 2
    np.testing.assert_allclose(pick.benefit, [0.9, 0.25])
