"""How a reader meets the code: the shape of ``flywheel/`` and the path one cycle takes
through its modules, for one or more source trees (e.g. before and after a restructure).

Static: modules, lines, the largest module and how many exceed 300 lines, per tree.
Dynamic: ``flywheel ingest digits`` then ``flywheel cycle run --cycles 2`` in-process with
tiny learning settings, under a profiler that sees every Python call between two modules
of ``flywheel/``. Counted are distinct call sites (caller function -> callee function), so
a loop is one site: the modules the cycle enters, the cross-module call sites into each,
and the *call-back* sites: calls into a module that is already on the stack below the
caller (the path left it and comes back, e.g. a progress callback defined in a step and
called from training). Fewer call-backs means the path reads top-down.

    python bench/bench_layout.py --tree . --tree /path/to/older/checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from harness.cli import parser

# Tiny and fixed: the path through the code, not the learning, is measured.
TINY = {
    "FLYWHEEL_LEARNING__SSL_EPOCHS": "1",
    "FLYWHEEL_LEARNING__TRAIN_EPOCHS": "1",
    "FLYWHEEL_LEARNING__FIXMATCH_EPOCHS": "1",
    "FLYWHEEL_LEARNING__STEPS_PER_EPOCH": "2",
}


def static_shape(tree: Path) -> dict[str, Any]:
    sizes = {
        str(p.relative_to(tree)): len(p.read_text().splitlines())
        for p in (tree / "flywheel").rglob("*.py")
        if "migrations" not in p.parts
    }
    largest = max(sizes, key=sizes.__getitem__)
    return {
        "modules": len(sizes),
        "packages": sum(1 for p in (tree / "flywheel").rglob("__init__.py")),
        "lines": sum(sizes.values()),
        "largest": f"{largest} ({sizes[largest]})",
        "over_300_lines": sum(1 for n in sizes.values() if n > 300),
    }


def trace_cycle(data_dir: Path) -> dict[str, Any]:
    """Run in the child: the cycle under a profiler; counts per flywheel module."""
    import flywheel
    from flywheel.cli import main

    root = str(Path(flywheel.__file__).parent) + os.sep
    # Distinct call sites, not calls: a loop over images is one edge, not thousands.
    edges: set[tuple[str, str]] = set()
    backs: set[tuple[str, str]] = set()
    stack: list[tuple[str, str] | None] = []  # (module, function) of each flywheel frame

    def where(frame: Any) -> tuple[str, str] | None:
        name = frame.f_code.co_filename
        if not name.startswith(root):
            return None
        return name[len(root) :], frame.f_code.co_qualname

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call":
            here, caller = where(frame), stack[-1] if stack else None
            if here is not None and caller is not None and here[0] != caller[0]:
                edge = (f"{caller[0]}:{caller[1]}", f"{here[0]}:{here[1]}")
                edges.add(edge)
                if any(f is not None and f[0] == here[0] for f in stack):
                    backs.add(edge)
            stack.append(here if here is not None else caller)
        elif event == "return" and stack:
            stack.pop()

    def cli(*args: str) -> None:
        sys.argv = ["flywheel", "--data-dir", str(data_dir), *args]
        try:
            main()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise

    cli("ingest", "digits")
    sys.setprofile(profile)
    try:
        cli("cycle", "run", "--cycles", "2")
    finally:
        sys.setprofile(None)
    into = Counter(callee.split(":")[0] for _, callee in edges)
    back_into = Counter(callee.split(":")[0] for _, callee in backs)
    return {
        "modules_on_the_path": len(into),
        "cross_module_call_sites": len(edges),
        "call_back_sites": len(backs),
        "most_entered": into.most_common(4),
        "most_called_back": back_into.most_common(4),
        "call_backs": sorted(f"{a} -> {b}" for a, b in backs),
    }


def measure(tree: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flywheel-layout-") as tmp:
        env = {**os.environ, **TINY, "PYTHONPATH": str(tree)}
        out = (
            subprocess.run(
                [sys.executable, __file__, "--child", str(Path(tmp) / "data")],
                env=env,
                cwd=tmp,  # so the tree on PYTHONPATH, not this checkout, is imported
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    return {"tree": str(tree), **static_shape(tree), **json.loads(out)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(trace_cycle(args.child)))
        return
    rows = [measure(t.resolve()) for t in args.tree or [Path(__file__).resolve().parents[1]]]
    keys = [k for k in rows[0] if k not in ("tree", "call_backs")]
    print("| | " + " | ".join(r["tree"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r[k]) for r in rows) + " |")
    for r in rows:
        print(f"\ncall-back sites in {r['tree']}:")
        print("\n".join(f"  {edge}" for edge in r["call_backs"]))


if __name__ == "__main__":
    main()
