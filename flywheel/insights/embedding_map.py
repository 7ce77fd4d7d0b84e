"""A 2-D map of the newest cycle's embedding: where the labels are, and where they are not.

Projection: PCA to 2 dimensions by default. t-SNE (PCA to 50 first, as usual) draws far
tighter clusters, but sklearn's Barnes-Hut t-SNE took 4.5 s for 2,000 points, 21 s for
5,000 and 103 s for 20,000 on the 2-core reference machine, against 0.01 s for PCA: too
slow to draw on request, so it is opt-in (``method="tsne"``), for small maps or offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sqlalchemy import select

from flywheel.db import Label
from flywheel.db.labels import is_current
from flywheel.db.models import LabelSource
from flywheel.insights.plots import _save, plt
from flywheel.learn.snapshots import EmbeddingSnapshot, latest_embeddings
from flywheel.workspace import Workspace

UNLABELED = "unlabeled"
GREY = "#cfcfcf"
SOURCE_COLORS = {
    LabelSource.SEED.value: "#1f77b4",
    LabelSource.HUMAN.value: "#2ca02c",
    LabelSource.FEEDBACK.value: "#ff7f0e",
    LabelSource.PSEUDO.value: "#9467bd",
}
MAX_LEGEND = 20  # more classes than this: the legend names the first ones and says so


def _subsample(snap: EmbeddingSnapshot, max_points: int, seed: int) -> np.ndarray:
    """Row indices to draw (sorted): every labeled and test row first (few, and what the
    colours are about), the pool sampled with ``seed`` to fill up to ``max_points``."""
    n = len(snap.ids)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    kept = np.flatnonzero(snap.split != "pool")
    if len(kept) >= max_points:
        return np.sort(rng.choice(kept, max_points, replace=False))
    pool = np.flatnonzero(snap.split == "pool")
    extra = rng.choice(pool, max_points - len(kept), replace=False)
    return np.sort(np.concatenate([kept, extra]))


def _current(ws: Workspace) -> dict[str, tuple[str, str]]:
    """Sample id -> (label, source) of its current (newest, not retracted) label."""
    with ws.db.session() as s:
        rows = s.execute(
            select(Label.sample_id, Label.label, Label.source).where(is_current())
        ).all()
    return {sid: (label, source) for sid, label, source in rows}


def project(
    vectors: np.ndarray, method: Literal["pca", "tsne"] = "pca", seed: int = 0
) -> np.ndarray:
    """(n, d) -> (n, 2) float coordinates."""
    x = np.asarray(vectors, dtype=np.float32)
    if method == "tsne" and len(x) > 5:
        reduced = PCA(min(50, *x.shape), random_state=seed).fit_transform(x)
        perplexity = min(30.0, (len(x) - 1) / 3)
        return TSNE(2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(reduced)
    out = np.zeros((len(x), 2))
    k = min(2, len(x) - 1, x.shape[1])  # n points span at most n - 1 directions
    if k > 0:  # the axes there is nothing to put on stay 0
        out[:, :k] = PCA(k, random_state=seed).fit_transform(x)
    return out


def _palette(names: list[str]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    if len(names) > 20:
        cmap = plt.get_cmap("nipy_spectral")
        return {c: cmap(i / max(len(names) - 1, 1)) for i, c in enumerate(names)}
    return {c: cmap(i) for i, c in enumerate(names)}


def embedding_map_png(
    ws: Workspace,
    path: Path,
    color_by: Literal["label", "source"] = "label",
    max_points: int = 20000,
    seed: int = 0,
    method: Literal["pca", "tsne"] = "pca",
) -> Path | None:
    """Draw the newest embeddings artifact to ``path`` (PNG); None if there is none yet.

    Points are coloured by their current label (``color_by="label"``; the unlabeled pool in
    light grey) or by the label's source; test-split samples are triangles. Beyond
    ``max_points`` the pool is subsampled deterministically (``seed``).
    """
    if color_by not in ("label", "source"):
        raise ValueError(f"color_by must be 'label' or 'source', got {color_by!r}")
    snap = latest_embeddings(ws)
    if snap is None:
        return None
    rows = _subsample(snap, max_points, seed)
    xy = project(snap.vectors[rows], method, seed)
    current = _current(ws)
    field = 0 if color_by == "label" else 1
    cats = np.array(
        [current.get(str(sid), (UNLABELED, UNLABELED))[field] for sid in snap.ids[rows]]
    )
    test = snap.split[rows] == "test"

    names = sorted(set(cats.tolist()) - {UNLABELED})
    if color_by == "source":
        order = [*SOURCE_COLORS, *sorted(set(names) - set(SOURCE_COLORS))]
        names = [s for s in order if s in names]
        colors = {s: SOURCE_COLORS.get(s, "#8c564b") for s in names}
    else:
        colors = _palette(names)
    colors[UNLABELED] = GREY

    size = float(np.clip(20000 / max(len(rows), 1), 2, 24))  # dense maps: smaller dots
    fig, ax = plt.subplots(figsize=(8.5, 6.5), dpi=110)
    # Grey underneath: the coloured (labeled) points are the few that matter.
    for i, name in enumerate([UNLABELED, *names]):
        for is_test, marker in ((False, "o"), (True, "^")):
            pick = (cats == name) & (test == is_test)
            if not pick.any():
                continue
            shown = i <= MAX_LEGEND and not is_test
            ax.scatter(
                xy[pick, 0],
                xy[pick, 1],
                s=size * (2.2 if is_test else 1.0),
                c=[colors[name]],
                marker=marker,
                linewidths=0,
                alpha=0.55 if name == UNLABELED else 0.85,
                label=name if shown else None,
                zorder=1 if name == UNLABELED else 2,
            )
    if test.any():
        ax.scatter([], [], marker="^", c="black", s=20, label="test split (triangles)")
    if len(names) > MAX_LEGEND:
        ax.scatter([], [], c="white", s=0, label=f"... {len(names) - MAX_LEGEND} more classes")
    legend = ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    for handle in legend.legend_handles:  # legible whatever the dot size
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([30])
    ax.set_xticks([])
    ax.set_yticks([])
    shown_of = (
        f"{len(rows):,} of {len(snap.ids):,}" if len(rows) < len(snap.ids) else f"{len(rows):,}"
    )
    ax.set_title(
        f"cycle {snap.cycle_id}: {snap.name} embedding, {method.upper()} "
        f"({shown_of} samples, by {color_by})",
        fontsize=10,
    )
    return _save(fig, path)
