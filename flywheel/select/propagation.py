"""Label spreading over a kNN graph of all samples (Zhou et al. 2004, as used for deep SSL
by Iscen et al. 2019): the ``propagation`` vote of the calibrated strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from flywheel.learn.index import build_index, search

if TYPE_CHECKING:
    from flywheel.select.calibrated import SelectionConfig


def drop_self(sims: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (or its last column if absent) from a self-search."""
    is_self = ids == np.arange(len(ids))[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), ids.shape[1] - 1)
    keep = np.ones(ids.shape, dtype=bool)
    keep[np.arange(len(ids)), drop] = False
    k = ids.shape[1] - 1
    return sims[keep].reshape(-1, k), ids[keep].reshape(-1, k)


def _spread(
    graph: sp.csr_matrix, seeds: np.ndarray, seed_labels: np.ndarray, cfg: SelectionConfig, c: int
) -> np.ndarray:
    """Label spreading: solve (I - alpha S) F = Y by CG, one column per class -> (N, C)."""
    n = graph.shape[0]
    op = sp.identity(n, format="csr") - cfg.propagation_alpha * graph
    f = np.zeros((n, c))
    for cls in range(c):
        y = np.zeros(n)
        y[seeds[seed_labels == cls]] = 1.0
        if y.any():
            f[:, cls] = cg(op, y, maxiter=cfg.propagation_iters)[0]
    f = np.clip(f, 0, None)
    total = f.sum(axis=1, keepdims=True)
    return np.where(total > 0, f / np.maximum(total, 1e-30), 1.0 / c).astype(np.float32)


def propagated_votes(
    nodes: np.ndarray,
    n_labeled: int,
    labels: np.ndarray,
    calib_rows: np.ndarray | None,
    cfg: SelectionConfig,
    c: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Propagated class distributions for ``nodes`` (N, d); labeled rows come first.

    Returns (all-seed distributions (N, C), calibration-row distributions). Without a
    separate calibration set (``calib_rows`` None) the labeled set is cross-fitted: each
    fold's rows are scored with that fold's labels hidden.
    """
    index = build_index(nodes, cfg.graph_index_kind, **cfg.index_options)
    sims, ids = drop_self(*search(index, nodes, cfg.propagation_k + 1))
    w = np.where(ids >= 0, np.clip(sims, 0, None), 0.0) ** cfg.similarity_power
    rows = np.repeat(np.arange(len(nodes)), ids.shape[1])
    w_mat = sp.csr_matrix((w.ravel(), (rows, np.maximum(ids, 0).ravel())), shape=(len(nodes),) * 2)
    w_mat = w_mat + w_mat.T
    d = np.asarray(w_mat.sum(axis=1)).ravel()
    d_inv = sp.diags(np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-30)), 0.0))
    graph = (d_inv @ w_mat @ d_inv).tocsr()
    seeds = np.arange(n_labeled)
    full = _spread(graph, seeds, labels, cfg, c)
    if calib_rows is not None:
        return full, full[calib_rows]
    # Stratified folds: the i-th sample of each class goes to fold i mod folds.
    order = np.random.default_rng(cfg.seed).permutation(n_labeled)
    rank = np.empty(n_labeled, dtype=np.int64)
    for cls in np.unique(labels):
        members = order[labels[order] == cls]
        rank[members] = np.arange(len(members))
    fold = rank % cfg.propagation_folds
    calib = np.empty((n_labeled, c), dtype=np.float32)
    for f in range(cfg.propagation_folds):
        held = fold == f
        if held.any():
            calib[held] = _spread(graph, seeds[~held], labels[~held], cfg, c)[:n_labeled][held]
    return full, calib
