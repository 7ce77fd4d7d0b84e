"""What a benchmark leaves behind: JSON results (written whole, or merged run by run),
markdown tables as BENCHMARKS.md shows them, matplotlib figures rendered without a display,
and a description of the machine that measured them."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (parent folders created, trailing newline); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def merge_run(path: Path, run: dict[str, Any], key: str = "label") -> None:
    """Add ``run`` to the list of runs in ``path``, replacing the one with the same
    ``key``: a results file keeps one entry per configuration measured."""
    runs = read_json(path) if path.exists() else []
    write_json(path, [r for r in runs if r[key] != run[key]] + [run])


def table_header(columns: Sequence[str], align: str) -> str:
    """The two header lines of a markdown table; ``align`` has one letter per column:
    ``l`` (left) or ``r`` (right, for numbers)."""
    if len(columns) != len(align):
        raise ValueError(f"{len(columns)} columns, {len(align)} alignments")
    rule = "|".join("---:" if a == "r" else "---" for a in align)
    return f"{table_row(columns)}\n|{rule}|"


def table_row(cells: Iterable[object]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(columns: Sequence[str], align: str, rows: Iterable[Iterable[object]]) -> str:
    """A whole markdown table (no trailing newline)."""
    return "\n".join([table_header(columns, align), *(table_row(r) for r in rows)])


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures render to files, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: float | None = None) -> Path:
    """Save ``fig`` to ``path`` (parent folders created) and close it; the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **({"dpi": dpi} if dpi is not None else {}))
    pyplot().close(fig)
    return path


def machine() -> dict[str, Any]:
    """The machine that measured a result: core count, Python, platform."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
