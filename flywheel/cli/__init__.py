"""The ``flywheel`` command line (typer + rich).

User mistakes (a bad path, an unknown version, a bad option) print one red line and exit
with status 1; only bugs show a traceback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import (
    LabelsOpt,
    SeedOpt,
    console,
    err_console,
    registry_for,
    shown,
    workspace,
)
from flywheel.cli.cycles import cycle_app, cycle_table, models_app, run_cycles
from flywheel.cli.data import data_app, ingest_app, print_diff, print_version, run_ingest
from flywheel.cli.feedback import feedback_app
from flywheel.cli.service import beat, keys_app, serve, worker
from flywheel.config import Settings, SettingsError, load_settings
from flywheel.errors import FlywheelError
from flywheel.store.ingest import SplitPlan
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import MARKER

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Flywheel: a semi-supervised data flywheel for vision models.",
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(data_app, name="data")
app.add_typer(cycle_app, name="cycle")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")
app.command()(serve)
app.command()(worker)
app.command()(beat)


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML settings file.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Override settings.data_dir.")
    ] = None,
) -> None:
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    ctx.obj = load_settings(config, **overrides)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the data folder and the database (or upgrade an existing one)."""
    with workspace(ctx) as ws:
        s = ws.settings
        console.print(f"[green]ready[/] data dir {Path(s.data_dir).resolve()}")
        console.print(f"  database  {s.database_url}")
        console.print(f"  store     {s.storage_root}")
        console.print(f"  mlflow    {s.mlflow_tracking_uri}")


@app.command()
def demo(
    ctx: typer.Context,
    fresh: Annotated[bool, typer.Option(help="Start from an empty data dir.")] = False,
    labels_per_class: LabelsOpt = 5,
    cycles: Annotated[int, typer.Option("--cycles", "-n", min=1)] = 5,
    feedback_predictions: Annotated[
        int, typer.Option(min=0, help="Predictions simulated users give feedback on.")
    ] = 300,
    seed: SeedOpt = 0,
) -> None:
    """Turn the wheel on the built-in digits data set with the embedded default."""
    settings: Settings = ctx.obj
    data_dir = Path(settings.data_dir)
    if fresh and data_dir.exists():
        if not (data_dir / MARKER).exists():
            raise FlywheelError(f"refusing to wipe {data_dir}: it is not a Flywheel data dir")
        shutil.rmtree(data_dir)
    console.rule("[bold]1. ingest sklearn digits (real 8x8 scans)")
    plan = SplitPlan(labels_per_class, 0.3, seed)
    run_ingest(ctx, digits_candidates(), "digits", plan)
    with workspace(ctx) as ws:
        console.rule("[bold]2. snapshot the seed labels into an immutable dataset version")
        info, _ = ws.versions.snapshot("demo: seed labels")
        print_version(info)
        console.rule(f"[bold]3. turn the wheel {cycles} times")
        results = run_cycles(ws, cycles)
        console.print(cycle_table(results))
        console.rule("[bold]4. what the wheel did to the training set")
        first, last = ws.versions.list()[0], ws.versions.resolve("latest")
        print_diff(ws.versions.diff(first.id, last.id))
        console.rule("[bold]5. an app's users give feedback; consensus weighs who to trust")
        from flywheel.cli.demo_feedback import print_feedback_demo, simulate_feedback

        feedback = simulate_feedback(ws, registry_for(ws.settings), feedback_predictions, seed)
        print_feedback_demo(ws, feedback)
    from flywheel.insights.plots import cycles_png

    png = cycles_png([r.metrics for r in results], data_dir / "demo_cycles.png")
    console.print(f"plot of accuracy and pseudo-label precision per cycle: [bold]{png}[/]")
    console.print(
        f"MLflow runs and models: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}"
    )


def main() -> None:
    try:
        app(standalone_mode=False)
    except FlywheelError as exc:
        # One line per problem: bad settings name each key and what it allows.
        problems = exc.problems if isinstance(exc, SettingsError) else str(exc).splitlines()
        for problem in problems or [type(exc).__name__]:
            err_console.print(f"[red]error:[/] {shown(problem)}", soft_wrap=True)  # one line
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
