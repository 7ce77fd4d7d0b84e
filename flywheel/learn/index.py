"""FAISS nearest-neighbour index over L2-normalised float32 embeddings.

Similarity is cosine: rows are L2-normalised on the way in and searched by inner product.
``kind`` picks the structure:

- ``"flat"`` (default): exact ``IndexFlatIP``. Right for the labeled set (thousands of rows)
  and for pools up to a few hundred thousand rows.
- ``"ivf"``: ``IndexIVFFlat`` (inverted lists, ``nlist`` k-means cells, ``nprobe`` searched).
  Approximate; for pools in the millions, where an exact pool-to-pool kNN graph is too slow.
- ``"ivfpq"``: ``IndexIVFPQ``, IVF whose vectors are product-quantised to ``pq_m`` bytes
  each: 16x less memory than IVF-flat, for pools whose vectors do not fit as floats; it
  ranks close neighbours coarsely, so measure its recall before relying on it.
- ``"hnsw"``: ``IndexHNSWFlat`` (graph, ``hnsw_m`` links per node, ``ef_search`` beam).
  Approximate, no training, higher recall per query cost than IVF, slower and larger to build.
- ``"auto"``: exact up to ``flat_max_rows`` rows, IVF-flat past it (``resolve_kind``).

``recall_at_k`` measures what an approximate index loses against exact search.

Ids are row positions in the array given to :func:`build_index` (int64). A query with fewer
than ``k`` reachable rows (approximate kinds, or ``k`` > rows) gets id ``-1`` and similarity
``-inf`` in the missing slots.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from flywheel.errors import InvalidInputError, NotFoundError

IndexKind = Literal["auto", "flat", "ivf", "ivfpq", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "ivf", "ivfpq", "hnsw")
# "auto": exact search up to this many rows. A flat search over 200k rows of 128 floats
# answers a kNN graph of the pool in minutes on 2 cores; past it, IVF's ~20x wins.
FLAT_MAX_ROWS = 200_000
PQ_MIN_TRAIN = 10_000  # rows to train 8-bit product quantisers on (FAISS warns below ~39*256)
# Rows normalised and added per batch: bounds the extra memory to one batch, not a pool copy.
_ADD_BATCH = 65_536


def check_embeddings(x: np.ndarray, name: str = "embeddings", dim: int | None = None) -> None:
    """Raise :class:`InvalidInputError` unless ``x`` is a finite 2-d floating array.

    ``x``: (n, d) float16/32/64 with n >= 1; ``dim``, when given, must equal d.
    """
    if not isinstance(x, np.ndarray):
        raise InvalidInputError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-d (n, d), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidInputError(f"{name} must be a floating dtype (float32), got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty: shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InvalidInputError(f"{name} has dimension {x.shape[1]}, index has {dim}")


def normalize(x: np.ndarray, name: str = "embeddings") -> np.ndarray:
    """Return a C-contiguous float32 copy of ``x`` (n, d) with unit-L2-norm rows.

    Rows of zero norm or non-finite values have no direction and are refused.
    """
    out = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] <= 1e-12)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise InvalidInputError(f"{name} has zero-norm or non-finite rows, e.g. rows {rows}")
    out /= norms
    return out


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` rows: ~4*sqrt(n), with at least 39 training rows per cell."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def resolve_kind(kind: IndexKind, n: int, flat_max_rows: int = FLAT_MAX_ROWS) -> IndexKind:
    """The structure ``kind`` means for ``n`` rows: "auto" is flat up to ``flat_max_rows``."""
    if kind != "auto":
        return kind
    return "flat" if n <= flat_max_rows else "ivf"


def default_pq_m(d: int) -> int:
    """PQ sub-quantisers for ``d`` dimensions: the largest divisor of ``d`` up to ``d/4``
    (a byte per 4 dimensions: 16x smaller than floats, and lossy; ``recall_at_k`` says how
    much: 0.62 against IVF-flat's 0.97 on noisy 32-d clusters in the tests)."""
    return max(m for m in range(1, max(1, d // 4) + 1) if d % m == 0)


def build_index(
    embeddings: np.ndarray,
    kind: IndexKind = "flat",
    *,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_construction: int = 64,
    ef_search: int = 64,
    pq_m: int | None = None,
    flat_max_rows: int = FLAT_MAX_ROWS,
    seed: int = 0,
) -> faiss.Index:
    """Build an inner-product index over ``embeddings`` (n, d), normalised here.

    ``nlist`` defaults to :func:`default_nlist`; IVF trains on at most 256*nlist sampled
    rows (more adds build time, not recall). The caller's array is never modified.
    """
    check_embeddings(embeddings)
    if kind not in INDEX_KINDS:
        raise InvalidInputError(f"unknown index kind {kind!r}; expected one of {INDEX_KINDS}")
    n, d = embeddings.shape
    kind = resolve_kind(kind, n, flat_max_rows)
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        if hnsw_m < 2:
            raise InvalidInputError(f"hnsw_m must be >= 2, got {hnsw_m}")
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        nlist = default_nlist(n) if nlist is None else nlist
        if not 1 <= nlist <= n:
            raise InvalidInputError(f"nlist must be in [1, {n}] for {n} rows, got {nlist}")
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivfpq":
            pq_m = default_pq_m(d) if pq_m is None else pq_m
            if pq_m < 1 or d % pq_m:
                raise InvalidInputError(f"pq_m must divide the dimension {d}, got {pq_m}")
            if n < PQ_MIN_TRAIN:
                raise InvalidInputError(f"ivfpq needs at least {PQ_MIN_TRAIN} rows, got {n}")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # PQ's 256 codes per sub-quantiser need their own training rows beyond the cells'.
        n_train = min(n, max(256 * nlist, PQ_MIN_TRAIN if kind == "ivfpq" else 0))
        rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else slice(None)
        index.cp.seed = seed
        index.train(normalize(embeddings[rows]))
        index.nprobe = max(1, min(nprobe, nlist))
    for start in range(0, n, _ADD_BATCH):
        index.add(normalize(embeddings[start : start + _ADD_BATCH]))
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` most similar indexed rows for each query (normalised here).

    ``queries``: (m, d) floating. Returns ``(similarities, ids)``, both (m, min(k, ntotal)):
    float32 cosine similarities in descending order and int64 row ids (-1 = no neighbour).
    """
    check_embeddings(queries, "queries", dim=index.d)
    if not isinstance(k, int | np.integer) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if index.ntotal == 0:
        raise InvalidInputError("cannot search an empty index")
    k = min(int(k), index.ntotal)
    sims = np.empty((queries.shape[0], k), dtype=np.float32)
    ids = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], _ADD_BATCH):
        stop = start + _ADD_BATCH
        s, i = index.search(normalize(queries[start:stop], "queries"), k)
        sims[start:stop], ids[start:stop] = s, i
    sims[ids < 0] = -np.inf  # FAISS pads with -3.4e38 for inner product; make it explicit
    return sims, ids


def recall_at_k(
    index: faiss.Index, embeddings: np.ndarray, k: int = 10, queries: int = 500, seed: int = 0
) -> float:
    """Share of the exact ``k`` nearest neighbours ``index`` finds, for ``queries`` rows of
    ``embeddings`` (the rows the index was built on, in order) used as queries; 1.0 for an
    exact index. The exact answer is a brute-force scan, so it costs queries x n x d."""
    n = len(embeddings)
    k = min(k, n)
    rows = np.sort(np.random.default_rng(seed).choice(n, min(queries, n), replace=False))
    q = normalize(embeddings[rows], "queries")
    best_sims = np.full((len(rows), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(rows), 0), dtype=np.int64)
    for start in range(0, n, _ADD_BATCH):  # a running top-k: memory for one batch, not n
        chunk = q @ normalize(embeddings[start : start + _ADD_BATCH]).T
        ids = np.arange(start, start + chunk.shape[1])
        sims = np.concatenate([best_sims, chunk], axis=1)
        cand = np.concatenate([best_ids, np.broadcast_to(ids, chunk.shape)], axis=1)
        top = np.argpartition(-sims, min(k, sims.shape[1]) - 1, axis=1)[:, :k]
        best_sims = np.take_along_axis(sims, top, axis=1)
        best_ids = np.take_along_axis(cand, top, axis=1)
    exact = best_ids
    _, found = search(index, embeddings[rows], k)
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, found, strict=True)]
    return float(np.sum(hits) / (len(rows) * k))


def save_index(index: faiss.Index, path: str | os.PathLike[str]) -> Path:
    """Write ``index`` to ``path`` atomically (temp file in the same folder, then rename).

    A reader sees either the previous file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_index(path: str | os.PathLike[str]) -> faiss.Index:
    """Read an index written by :func:`save_index` (search settings such as nprobe kept)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"no index file at {path}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise InvalidInputError(f"{path} is not a readable FAISS index: {exc}") from exc
