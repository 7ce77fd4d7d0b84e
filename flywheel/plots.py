"""Matplotlib figures written as PNGs (headless: the Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first


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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def cycles_png(rows: Sequence[dict[str, float | None]], path: Path) -> Path:
    """Test accuracy and pseudo-label precision / coverage per cycle (one line each)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    cycles = list(range(1, len(rows) + 1))
    for key, label, style in (
        ("test_accuracy", "test accuracy", "o-"),
        ("pseudo_precision", "pseudo-label precision", "s-"),
        ("pseudo_coverage", "pseudo-label coverage of the pool", "^--"),
    ):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.plot(cycles, [float("nan") if v is None else v for v in values], style, label=label)
    ax.set_xlabel("cycle")
    ax.set_xticks(cycles)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Flywheel on digits: each turn of the wheel")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
