"""Matplotlib figures written as PNGs (headless: the Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)  # figures are global in pyplot: close or leak one per cycle
    return path


def confusion_matrix_png(confusion: list[list[int]], classes: Sequence[str], path: Path) -> Path:
    """Rows are true classes, columns predicted; counts annotated in each cell."""
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 1.0 + 0.45 * n), dpi=110)
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), classes)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            if count:
                color = "white" if count > peak / 2 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    ax.set_title("confusion matrix (test split)")
    return _save(fig, path)


def cycles_png(rows: Sequence[dict[str, float | None]], path: Path) -> Path:
    """Left: test accuracy and pseudo-label precision per cycle (zoomed to where they move);
    right: share of the pool covered by accepted pseudo-labels."""
    cycles = list(range(1, len(rows) + 1))

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=110)
    acc, prec = series("test_accuracy"), series("pseudo_precision")
    left.plot(cycles, acc, "o-", label="test accuracy (frozen split)")
    left.plot(cycles, prec, "s-", label="pseudo-label precision")
    known = [v for v in acc + prec if v == v]
    left.set_ylim(max(0.0, min(known, default=0.9) - 0.02), 1.005)
    left.set_title("quality")
    right.plot(cycles, series("pseudo_coverage"), "^--", color="tab:green")
    right.set_ylim(0, 1.02)
    right.set_title("pseudo-labels: share of the pool")
    for ax in (left, right):
        ax.set_xlabel("cycle")
        ax.set_xticks(cycles)
        ax.grid(alpha=0.3)
    left.legend(loc="lower right")
    fig.suptitle("Flywheel on digits: each turn of the wheel")
    return _save(fig, path)
