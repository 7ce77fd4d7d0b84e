"""FAISS index wrapper: exactness, approximate recall, persistence, input checks."""

from pathlib import Path

import numpy as np
import pytest

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.index import (
    build_index,
    default_pq_m,
    load_index,
    recall_at_k,
    resolve_kind,
    save_index,
    search,
)


def _clusters(
    n: int = 2000, d: int = 16, centers: int = 20, seed: int = 0, draw: int = 0
) -> np.ndarray:
    mu = np.random.default_rng(seed).normal(size=(centers, d))
    rng = np.random.default_rng([seed, draw])  # same centres, fresh points per draw
    return (mu[rng.integers(0, centers, n)] + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_matches_numpy_cosine_reference():
    x, q = _clusters(500), _clusters(40, seed=1)
    sims, ids = search(build_index(x), q, 5)
    ref = _unit(q.astype(np.float64)) @ _unit(x.astype(np.float64)).T
    ref_ids = np.argsort(-ref, axis=1)[:, :5]
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (40, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(sims, np.take_along_axis(ref, ref_ids, axis=1), atol=1e-5)


def test_inputs_are_normalised_and_not_modified():
    x = _clusters(300)
    before = x.copy()
    index = build_index(x * 7.0)
    s1, i1 = search(index, x[:10], 3)
    _, i2 = search(index, x[:10] * 0.01, 3)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1[:, 0], 1.0, atol=1e-5)  # each row finds itself, cosine 1


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("ivf", {"nlist": 20, "nprobe": 4}),
        ("hnsw", {"hnsw_m": 16}),
    ],
)
def test_approximate_agrees_with_exact_on_easy_data(kind, options):
    # 300 well-separated clusters of ~10: the true neighbours are the query's own cluster.
    x, q = _clusters(3000, centers=300), _clusters(200, centers=300, draw=1)
    _, exact = search(build_index(x), q, 10)
    _, approx = search(build_index(x, kind, **options), q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95


def test_k_larger_than_index_is_clamped():
    sims, ids = search(build_index(_clusters(3)), _clusters(2, seed=1), 10)
    assert ids.shape == (2, 3) and set(ids[0]) == {0, 1, 2}
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # descending


def test_save_load_round_trip_keeps_results_and_settings(tmp_path: Path):
    x, q = _clusters(2000), _clusters(50, seed=3)
    index = build_index(x, "ivf", nlist=16, nprobe=3)
    path = save_index(index, tmp_path / "sub" / "pool.faiss")
    loaded = load_index(path)
    assert loaded.ntotal == 2000 and loaded.nprobe == 3
    for a, b in zip(search(index, q, 5), search(loaded, q, 5), strict=True):
        np.testing.assert_array_equal(a, b)
    # Overwrite in place: the new index replaces the old, no temp files are left behind.
    save_index(build_index(x[:10]), path)
    assert load_index(path).ntotal == 10
    assert [p.name for p in path.parent.iterdir()] == ["pool.faiss"]


def test_load_errors(tmp_path: Path):
    with pytest.raises(NotFoundError, match="no index file"):
        load_index(tmp_path / "missing.faiss")
    junk = tmp_path / "junk.faiss"
    junk.write_bytes(b"not an index")
    with pytest.raises(InvalidInputError, match="not a readable FAISS index"):
        load_index(junk)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.ones(8, dtype=np.float32), "must be 2-d"),
        (np.ones((4, 8), dtype=np.int64), "floating dtype"),
        (np.ones((0, 8), dtype=np.float32), "empty"),
        (np.array([[1.0, np.nan]], dtype=np.float32), "non-finite"),
        (np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32), "zero-norm"),
        ([[1.0, 0.0]], "numpy array"),
    ],
)
def test_bad_embeddings_raise_clear_errors(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        build_index(bad)


def test_bad_search_arguments():
    index = build_index(_clusters(50))
    with pytest.raises(InvalidInputError, match="dimension 8, index has 16"):
        search(index, np.ones((2, 8), dtype=np.float32), 3)
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        search(index, _clusters(2), 0)
    with pytest.raises(InvalidInputError, match="unknown index kind"):
        build_index(_clusters(50), "lsh")
    with pytest.raises(InvalidInputError, match="nlist"):
        build_index(_clusters(50), "ivf", nlist=100)


def test_auto_is_exact_up_to_its_threshold_then_ivf():
    assert resolve_kind("auto", 200_000) == "flat"
    assert resolve_kind("auto", 200_001) == "ivf"
    assert resolve_kind("auto", 50, flat_max_rows=10) == "ivf"
    assert resolve_kind("hnsw", 10) == "hnsw"  # an explicit kind is kept at any size
    x = _clusters(400)
    assert build_index(x, "auto").ntotal == 400
    assert type(build_index(x, "auto", flat_max_rows=100, nlist=4)).__name__ == "IndexIVFFlat"


def test_recall_at_k_against_a_hand_count():
    x = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)  # no near-ties
    assert recall_at_k(build_index(x), x, k=10, queries=100) == 1.0  # exact
    # one IVF cell searched of 50: a query finds only the neighbours in its own cell
    ivf = build_index(x, "ivf", nlist=50, nprobe=1)
    assert recall_at_k(ivf, x, k=10, queries=2000) < 0.9
    measured = recall_at_k(ivf, x, k=10, queries=2000)
    _, exact = search(build_index(x), x, 10)
    _, found = search(ivf, x, 10)
    hand = np.mean([len(set(a) & set(b)) for a, b in zip(exact, found, strict=True)]) / 10
    assert measured == pytest.approx(hand, abs=1e-3)


def test_ivfpq_compresses_and_its_recall_says_what_that_costs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 32))[rng.integers(0, 100, 12000)] + rng.normal(size=(12000, 32))
    x = x.astype(np.float32)
    pq = build_index(x, "ivfpq", nlist=40, nprobe=8)
    assert type(pq).__name__ == "IndexIVFPQ" and pq.pq.M == 8  # 32 dims / 4: 8 bytes a row
    flat_cells = recall_at_k(build_index(x, "ivf", nlist=40, nprobe=8), x, queries=300)
    coded = recall_at_k(pq, x, queries=300)
    assert 0.3 < coded < flat_cells  # lossy, and measured as such (0.62 vs 0.97 here)


def test_ivfpq_checks_its_settings():
    assert default_pq_m(128) == 32 and default_pq_m(10) == 2 and default_pq_m(3) == 1
    with pytest.raises(InvalidInputError, match="pq_m must divide"):
        build_index(_clusters(12000), "ivfpq", pq_m=5)
    with pytest.raises(InvalidInputError, match="at least 10000 rows"):
        build_index(_clusters(500), "ivfpq")
