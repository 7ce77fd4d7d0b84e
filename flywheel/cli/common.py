"""Shared pieces of the CLI: consoles, the workspace, progress bars, common options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flywheel.config import Settings
from flywheel.text import printable
from flywheel.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from flywheel.learn.registry import ModelRegistry

console = Console()
err_console = Console(stderr=True)


def registry_for(settings: Settings) -> ModelRegistry:
    # Imported on use: MLflow and torch take seconds to import, most commands need neither.
    from flywheel.learn.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


@contextmanager
def workspace(ctx: typer.Context) -> Iterator[Workspace]:
    settings: Settings = ctx.obj
    ws = open_workspace(settings)
    try:
        yield ws
    finally:
        ws.close()


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


LabelsOpt = Annotated[
    int | None,
    typer.Option(
        "--labels-per-class",
        min=0,
        help="Keep this many labels per class as seed labels; the rest of the labeled "
        "images join the pool with their labels hidden (for measuring only).",
    ),
]
TestOpt = Annotated[
    float,
    typer.Option(
        "--test-fraction", min=0.0, max=0.99, help="Stratified share frozen as test split."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for the split assignment.")]


def shown(text: object) -> str:
    """Text from users or clients (ids, labels, names, error messages quoting them), for
    rich: control characters written as escapes and markup escaped, so a stored ANSI escape
    or "[red]" is printed, never obeyed (rows may predate the API's refusal of them)."""
    return escape(printable(str(text)))


def fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"
