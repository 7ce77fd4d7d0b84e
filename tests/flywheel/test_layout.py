"""The package's shape: stages of the data path import only earlier stages, and the
library never imports the web framework or the task queue (``api/`` and ``workers/`` do)."""

from __future__ import annotations

import ast
from pathlib import Path

import flywheel

PACKAGE = Path(flywheel.__file__).parent
# In data-path order; a module may import its own stage and those before it.
STAGES = (
    ("errors", "text", "config"),
    ("db",),
    ("store",),
    ("datasets",),
    ("workspace",),
    ("learn",),
    ("select",),
    ("feedback",),
    ("insights",),
    ("cycle",),
    ("serve",),
    ("client", "cli"),
)
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
# Settings validate names against these tables; they are name -> module maps that import
# nothing, so reading the settings stays cheap.
NAME_TABLES = {"flywheel.select.strategies", "flywheel.learn.ssl.methods"}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "flywheel" and len(parts) > 1 and parts[1] in RANK else None


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" not in rel.parts:
            out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def test_every_module_belongs_to_a_stage() -> None:
    assert [m for m, _ in modules() if m != "flywheel" and stage_of(m) is None] == []


def test_stages_import_only_earlier_stages() -> None:
    backwards = []
    for module, path in modules():
        own = stage_of(module)
        if own is None:
            continue
        for imported in imports_of(path):
            other = stage_of(imported)
            table = any(imported.startswith(t) for t in NAME_TABLES)
            if other is not None and RANK[other] > RANK[own] and not table:
                backwards.append(f"{module} -> {imported}")
    assert backwards == []


def test_the_library_imports_no_web_framework_or_task_queue() -> None:
    banned = ("fastapi", "starlette", "celery", "kombu", "api", "workers")
    offenders = []
    for module, path in modules():
        if module.startswith("flywheel.cli"):
            continue  # the CLI is an edge: it starts the server and the workers
        offenders += [
            f"{module} -> {imp}" for imp in imports_of(path) if imp.split(".")[0] in banned
        ]
    assert offenders == []
