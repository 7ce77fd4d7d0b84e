"""The dashboard's cycle chart, drawn on a bare matplotlib ``Figure``.

No pyplot: its global figure registry is not thread-safe, and pages render in a thread pool.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure

from api.web.queries import CycleRow
from flywheel.db.models import CycleState, LabelSource

SOURCE_COLORS = {
    LabelSource.SEED: "#4c72b0",
    LabelSource.HUMAN: "#55a868",
    LabelSource.FEEDBACK: "#dd8452",
    LabelSource.PSEUDO: "#8172b3",
}


def _value(row: CycleRow, key: str) -> float:
    v = row.metrics.get(key)
    return float(v) if isinstance(v, int | float) else float("nan")


def cycles_chart_png(rows: Sequence[CycleRow]) -> bytes:
    """Quality (test accuracy, promoted or not; pseudo-label precision), pool coverage by
    pseudo-labels, and the labels of each cycle's dataset version by source."""
    done = [r for r in rows if "test_accuracy" in r.metrics]
    fig = Figure(figsize=(11.0, 3.4), dpi=100)
    quality, coverage, sources = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1.2]})
    ids = [r.id for r in done]
    if not done:
        for ax in (quality, coverage, sources):
            ax.text(0.5, 0.5, "no finished cycles yet", ha="center", va="center")
            ax.set_axis_off()
    else:
        acc = [_value(r, "test_accuracy") for r in done]
        quality.plot(ids, acc, "-", color="#333", lw=1, zorder=1)
        promoted = [r.state == CycleState.PROMOTED for r in done]
        quality.scatter(
            [i for i, p in zip(ids, promoted, strict=True) if p],
            [a for a, p in zip(acc, promoted, strict=True) if p],
            color="#2a9d3f",
            s=36,
            zorder=2,
            label="test accuracy (promoted)",
        )
        quality.scatter(
            [i for i, p in zip(ids, promoted, strict=True) if not p],
            [a for a, p in zip(acc, promoted, strict=True) if not p],
            color="#c0392b",
            marker="x",
            s=40,
            zorder=2,
            label="test accuracy (not promoted)",
        )
        precision = [_value(r, "pseudo_precision") for r in done]
        if any(p == p for p in precision):
            quality.plot(ids, precision, "s--", ms=4, color="#8172b3", label="pseudo precision")
        quality.set_ylim(0, 1.02)
        quality.set_title("quality")
        quality.legend(loc="lower right", fontsize=7)
        cov = [_value(r, "pseudo_coverage") for r in done]
        coverage.plot(ids, cov, "^-", color="#8172b3")
        coverage.set_ylim(0, 1.02)
        coverage.set_title("pseudo-labels: share of the pool")
        bottom = [0.0] * len(done)
        names = sorted({s for r in done for s in (r.metrics.get("labels_by_source") or {})})
        for name in names:
            counts = [float((r.metrics.get("labels_by_source") or {}).get(name, 0)) for r in done]
            sources.bar(
                ids, counts, bottom=bottom, color=SOURCE_COLORS.get(name, "#999"), label=name
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        sources.set_title("labels in the dataset version, by source")
        if names:
            sources.legend(fontsize=7, loc="upper left")
        for ax in (quality, coverage, sources):
            ax.set_xlabel("cycle")
            ax.set_xticks(ids if len(ids) <= 20 else ids[:: max(1, len(ids) // 10)])
            ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
