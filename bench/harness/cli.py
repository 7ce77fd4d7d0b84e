"""How a benchmark script is invoked: where its results and figures go, an argument parser
with the options every benchmark spells the same way, and the script re-run as a child of
itself (one measurement per fresh process) that answers with one JSON line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def parser(doc: str | None, *, paragraph: bool = False) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` (a script's docstring), or by its
    first paragraph with ``paragraph``."""
    text = doc or ""
    summary = text.split("\n\n")[0] if paragraph else text.split("\n")[0]
    return argparse.ArgumentParser(description=summary or None)


def add_out(ap: argparse.ArgumentParser, default: Path | None, what: str = "results") -> None:
    """``--out``: where the JSON results go (default under bench/results)."""
    ap.add_argument("--out", type=Path, default=default, help=f"{what} (JSON)")


def add_seeds(ap: argparse.ArgumentParser, default: list[int]) -> None:
    """``--seeds``: the random seeds a result is averaged over."""
    ap.add_argument("--seeds", type=int, nargs="+", default=default)


def add_learning(ap: argparse.ArgumentParser) -> None:
    """``--learning KEY=VALUE ...``: learning settings other than the defaults."""
    ap.add_argument(
        "--learning",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="learning settings other than the defaults (recorded with every result)",
    )


def learning_overrides(args: argparse.Namespace) -> dict[str, str]:
    """``--learning``'s KEY=VALUE items as a dict (pydantic converts the values)."""
    return dict(item.split("=", 1) for item in args.learning)


def self_command(script: str, *args: str) -> list[str]:
    """The command that re-runs ``script`` (a benchmark's ``__file__``) with ``args``: a
    benchmark measures in a fresh process where one process's state would skew the next
    measurement (peak RSS, allocator, imports)."""
    return [sys.executable, script, *args]


def run_json(cmd: list[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` to completion and parse the last line of its output as JSON (earlier
    lines may be logs); a failed command raises ``CalledProcessError``."""
    out = subprocess.run(
        cmd, env=dict(env) if env is not None else None, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_args(argv: list[str], flag: str) -> list[str] | None:
    """The arguments after a leading child-mode word (``child``) in ``argv``, or None when
    the script runs as the parent: the child hands over to another argument parser (the
    flywheel CLI's), so it must be recognised before the benchmark parses its own."""
    if len(argv) > 1 and argv[1] == flag:
        return argv[2:]
    return None
