"""Which unsure pool samples a human should label first: ask where an answer helps most.

A human answer is worth most where the wheel is unsure (just below a class's accept threshold,
or where two models name different classes) *and* where the sample covers a part of the
embedding that neither the labeled set nor the samples already queued cover. Ranking is greedy
on benefit = uncertainty x distance to the nearest covered point, so a cluster of
near-duplicates costs one review, not the whole quota.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.errors import InvalidInputError

# Distances below this are float32 round-off of identical rows: such a sample is covered.
_SAME = 1e-6
_CHUNK = 4096  # rows per block when computing norms
# Pool rows per block when comparing with k covered rows: at most 64k, and k x rows similarities
_BLOCK, _BLOCK_CELLS = 65_536, 1 << 22


@dataclass(frozen=True)
class ReviewPick:
    """The review queue, best first; ``benefit`` is the greedy gain when each was picked."""

    order: np.ndarray  # (r,) int64 positions into the pool
    benefit: np.ndarray  # (r,) float64 uncertainty x distance at pick time (not monotone)
    uncertainty: np.ndarray  # (r,) float64
    reason: list[str]  # "disputed" or "near_threshold" (disputed wins when both)


def _vector(x: np.ndarray, n: int | None, name: str, kind: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 or (n is not None and x.shape[0] != n):
        want = f"({n},)" if n is not None else "1-d"
        raise InvalidInputError(f"{name} must have shape {want}, got {x.shape}")
    if kind == "bool" and x.dtype != np.bool_:
        raise InvalidInputError(f"{name} must be a bool mask, got dtype {x.dtype}")
    if kind == "int" and not np.issubdtype(x.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integer class ids, got dtype {x.dtype}")
    if kind == "float" and not np.issubdtype(x.dtype, np.number):
        raise InvalidInputError(f"{name} must be numeric, got dtype {x.dtype}")
    return x


def review_uncertainty(
    score: np.ndarray,
    threshold: np.ndarray,
    label: np.ndarray,
    band: float,
    *,
    disputed: np.ndarray | None = None,
    other_score: np.ndarray | None = None,
) -> np.ndarray:
    """(n,) float64 in [0, 1]: how unsure the wheel is about each sample's label.

    Near threshold: with t = ``threshold[label]``, u = clip(1 - (t - s) / band, 0, 1) for
    s < t and 0 for s >= t (accepted): 1 at the threshold, 0 at ``band`` below it. A class
    with t = +inf accepts nothing; its reference is then its best pool score (1.0 when it has
    no sample), so its most confident samples are the ones asked about. ``band`` 0 gives 0.
    Disputed (``disputed`` and ``other_score`` together: a second model names another class
    with confidence ``other_score``): u = max(u, 1 - |s - other_score|), 1 when both models
    are equally sure, since then neither opinion outweighs the other.
    """
    s = _vector(score, None, "score", "float").astype(np.float64)
    n = s.shape[0]
    t = _vector(threshold, None, "threshold", "float").astype(np.float64)
    y = _vector(label, n, "label", "int")
    if not np.isfinite(s).all() or np.isnan(t).any():
        raise InvalidInputError("score must be finite and threshold not NaN")
    if n and (y.min() < 0 or y.max() >= t.shape[0]):
        raise InvalidInputError(f"label must be class ids in [0, {t.shape[0]})")
    if not band >= 0:
        raise InvalidInputError(f"band must be >= 0, got {band}")
    best = np.full(t.shape[0], -np.inf)
    np.maximum.at(best, y, s)
    ref = np.where(np.isposinf(t), np.where(np.isfinite(best), best, 1.0), t)[y]
    below = (s < ref) | np.isposinf(t[y])
    u = np.zeros(n) if band == 0 else np.clip(1.0 - (ref - s) / band, 0.0, 1.0)
    u = np.where(below, u, 0.0)
    if (disputed is None) != (other_score is None):
        raise InvalidInputError("give disputed and other_score together, or neither")
    if disputed is not None:
        mask = _vector(disputed, n, "disputed", "bool")
        other = _vector(other_score, n, "other_score", "float").astype(np.float64)
        u = np.where(mask, np.maximum(u, np.clip(1.0 - np.abs(s - other), 0.0, 1.0)), u)
    return u


def _rows(x: np.ndarray, rows: np.ndarray | None, part: slice) -> np.ndarray:
    """``x``'s rows ``rows[part]`` (all of ``x`` when ``rows`` is None): one block gathered,
    never the candidates' vectors all at once."""
    return x[part] if rows is None else x[rows[part]]


def _norms(x: np.ndarray, rows: np.ndarray | None, name: str) -> np.ndarray:
    """float32 row norms of ``x``'s ``rows`` (None: all), read a block at a time; each must
    be finite and non-zero, as every one of them is compared."""
    count = len(x) if rows is None else len(rows)
    norms = np.empty(count, dtype=np.float32)
    for start in range(0, count, _CHUNK):
        part = slice(start, start + _CHUNK)
        norms[part] = np.linalg.norm(_rows(x, rows, part), axis=1)
    if not (np.isfinite(norms) & (norms > 1e-12)).all():
        raise InvalidInputError(f"{name} has zero-norm or non-finite rows")
    return norms


def _distance(sim: np.ndarray) -> np.ndarray:
    """Cosine similarity -> (1 - cos) / 2 in [0, 1]; round-off of identical rows -> 0."""
    d = np.clip((1.0 - sim.astype(np.float64)) / 2.0, 0.0, 1.0)
    return np.where(d < _SAME, 0.0, d)


def _lower_distances(
    d: np.ndarray,
    pool: np.ndarray,
    rows: np.ndarray | None,
    norms: np.ndarray,
    covered: np.ndarray,
) -> None:
    """d = min(d, distance to the nearest of the unit rows ``covered`` (k, dim)), in place,
    for the pool's ``rows`` (None: all), read a block at a time: a million rows are never
    copied whole."""
    size = max(256, min(_BLOCK, _BLOCK_CELLS // max(1, covered.shape[0])))
    for start in range(0, len(d), size):
        block = slice(start, start + size)
        sim = (_rows(pool, rows, block) @ covered.T).max(axis=1) / norms[block]
        np.minimum(d[block], _distance(sim), out=d[block])


def rank_for_review(
    candidates: np.ndarray,
    uncertainty: np.ndarray,
    disputed: np.ndarray,
    pool_embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    max_review: int,
) -> ReviewPick:
    """Greedy review queue of at most ``max_review`` pool positions, best first.

    d_i = (1 - max cosine to the labeled set and the picks so far) / 2 (1 with nothing
    covered); each step picks the candidate with the largest u_i x d_i (lowest index on ties),
    then lowers d by the new pick. Zero benefit (u = 0, or a copy of a covered point) is
    never picked: the queue stops short rather than spend a human on it. Embeddings are
    (n, d) and (m, d) floating, m may be 0; similarities are cosines (rows need not be unit).
    """
    cand = _vector(candidates, None, "candidates", "bool")
    n = cand.shape[0]
    u = _vector(uncertainty, n, "uncertainty", "float").astype(np.float64)
    dis = _vector(disputed, n, "disputed", "bool")
    if not (np.isfinite(u).all() and ((u >= 0) & (u <= 1)).all()):
        raise InvalidInputError("uncertainty must be finite and in [0, 1]")
    pool, lab = np.asarray(pool_embeddings), np.asarray(labeled_embeddings)
    if pool.ndim != 2 or pool.shape[0] != n or not np.issubdtype(pool.dtype, np.floating):
        raise InvalidInputError(f"pool_embeddings must be floating (n={n}, d), got {pool.shape}")
    if lab.ndim != 2 or lab.shape[1] != pool.shape[1] or not np.issubdtype(lab.dtype, np.floating):
        raise InvalidInputError(
            f"labeled_embeddings must be floating (m, {pool.shape[1]}), got {lab.shape}"
        )
    eligible = np.flatnonzero(cand & (u > 0))
    picked: list[int] = []
    gains: list[float] = []
    if max_review > 0 and eligible.size:
        # Distances for the eligible rows only (others gain nothing), their vectors read a
        # block at a time: a copy would cost the pool's vectors again (128 MB at a million
        # 32-d rows), and pool-sized work arrays 36 B a sample. All eligible: plain slices.
        rows = None if eligible.size == n else eligible
        norms = _norms(pool, rows, "pool_embeddings")
        weight = u[eligible]
        d = np.ones(eligible.size)
        if lab.shape[0]:
            lab_norms = _norms(lab, None, "labeled_embeddings")
            covered = (lab / lab_norms[:, None]).astype(pool.dtype)
            _lower_distances(d, pool, rows, norms, covered)
        gain = weight * d
        for _ in range(min(max_review, eligible.size)):
            at = int(np.argmax(gain))  # first maximum: eligible is sorted, lowest pool index
            if gain[at] <= 0:
                break
            best = int(eligible[at])
            picked.append(best)
            gains.append(float(gain[at]))
            _lower_distances(d, pool, rows, norms, pool[best : best + 1] / norms[at])
            d[at] = 0.0  # the pick itself is covered, whatever the round-off
            np.multiply(weight, d, out=gain)
    order = np.asarray(picked, dtype=np.int64)
    reason = ["disputed" if dis[i] else "near_threshold" for i in order]
    return ReviewPick(order, np.asarray(gains, dtype=np.float64), u[order], reason)
