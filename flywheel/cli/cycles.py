"""``flywheel cycle ...`` and ``flywheel models ...``: turning the wheel, the registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from sqlalchemy import select

from flywheel.cli.common import (
    console,
    err_console,
    fmt,
    progress_bar,
    registry_for,
    workspace,
)
from flywheel.db import Cycle
from flywheel.db.models import CycleState, CycleTrigger
from flywheel.errors import FlywheelError, InvalidInputError, NotFoundError
from flywheel.workspace import Workspace

if TYPE_CHECKING:
    from flywheel.cycle.champion import ChampionMove
    from flywheel.cycle.state import CycleResult

cycle_app = typer.Typer(no_args_is_help=True, help="Turn the wheel: run and inspect cycles.")
models_app = typer.Typer(no_args_is_help=True, help="The model registry: list, promote, rollback.")


def cycle_table(results: list[CycleResult]) -> Table:
    """Fits 80 columns: CI logs and `make demo` in a plain terminal stay readable."""
    table = Table(
        "#",
        "labels",
        "pseudo accepted\n(+ review)",
        "pseudo\nprecision",
        "pseudo\ncoverage",
        "test\naccuracy",
        "result",
        title="cycles (pseudo-labels scored against the pool's hidden truth)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for r in results:
        m = r.metrics
        table.add_row(
            str(r.cycle_id),
            "\n".join(f"{k} {v}" for k, v in m["labels_by_source"].items()),
            f"{m['accepted']} (+{m['needs_review']})",
            fmt(m.get("pseudo_precision")),
            fmt(m.get("pseudo_coverage")),
            fmt(m["test_accuracy"]),
            f"[green]promoted v{r.model_version}[/]"
            if r.state == CycleState.PROMOTED
            else "[yellow]rejected[/]",
        )
    return table


def run_cycles(ws: Workspace, cycles: int) -> list[CycleResult]:
    from flywheel.cycle.guard import holder_id
    from flywheel.cycle.runner import run_cycles_here

    registry = registry_for(ws.settings)
    # One cycle at a time per project: an API or another CLI running one is an error here.
    with cycle_bar() as bar:
        tasks: dict[int, TaskID] = {}

        def progress_for(n: int) -> Callable[[str, float, str], None]:
            tasks[n] = bar.add_task("cycle", total=1.0, n=f"{n}/{cycles}", message="starting")

            def update(step: str, fraction: float, message: str) -> None:
                bar.update(tasks[n], completed=fraction, message=f"{step}: {message}")

            return update

        def on_result(n: int, result: CycleResult) -> None:
            bar.update(tasks[n], completed=1.0, message=result.state)

        return run_cycles_here(
            ws, registry, ws.settings.learning, cycles, holder_id("cli"), progress_for, on_result
        )


def cycle_bar() -> Progress:
    return Progress(
        TextColumn("[bold]cycle {task.fields[n]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[message]}"),
        console=err_console,
    )


def queue_cycle(ws: Workspace) -> int:
    """Queue a cycle for the workers and hand it to the broker now if it is up (else the
    outbox keeps it until a relay gets through: beat, the API, or the next CLI call)."""
    from flywheel.cycle import runner
    from workers.app import create_celery
    from workers.tasks import publish

    create_celery(ws.settings)
    cycle_id, report = runner.queue_cycle(ws, ws.settings, CycleTrigger.MANUAL, publish)
    if report is not None and report.failed:
        err_console.print(
            "[yellow]broker unreachable:[/] the cycle waits in the database until it is back"
        )
    return cycle_id


def wait_for_cycle(ws: Workspace, cycle_id: int, label: str, poll_s: float = 0.5) -> Cycle:
    """Follow a cycle that workers run, with a live progress bar, until it ends."""
    from flywheel.cycle.state import FINISHED, load_cycle

    with cycle_bar() as bar:
        task = bar.add_task("cycle", total=1.0, n=label, message="queued")
        while True:
            c = load_cycle(ws, cycle_id)
            where = f" on {c.worker.split('@', 1)[-1]}" if c.worker else ""
            bar.update(
                task, completed=c.progress or 0.0, message=f"{c.state}{where}: {c.message or ''}"
            )
            if c.state in FINISHED:
                return c
            time.sleep(poll_s)


@cycle_app.command("run")
def cycle_run(
    ctx: typer.Context,
    cycles: Annotated[int, typer.Option("--cycles", "-n", min=1, help="How many cycles.")] = 1,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="With a broker: follow the cycle until it ends (default), or print its id "
            "and return at once. Without one, cycles run here and are always waited for.",
        ),
    ] = True,
) -> None:
    """Run cycles: on the workers when a broker is configured, else in this process."""
    with workspace(ctx) as ws:
        if ws.settings.broker.url is None:
            results = run_cycles(ws, cycles)
        else:
            if not wait and cycles > 1:
                raise InvalidInputError("one cycle at a time: use --wait for --cycles > 1")
            from flywheel.cycle.state import result_of

            results = []
            for n in range(1, cycles + 1):
                cycle_id = queue_cycle(ws)
                if not wait:
                    console.print(f"queued cycle {cycle_id}: flywheel cycle status {cycle_id}")
                    return
                done = wait_for_cycle(ws, cycle_id, f"{n}/{cycles} (#{cycle_id})")
                if done.state == CycleState.FAILED:
                    raise FlywheelError(f"cycle {cycle_id} failed: {done.error}")
                results.append(result_of(done))
    console.print(cycle_table(results))


@cycle_app.command("ssl")
def cycle_ssl(ctx: typer.Context, cycle_id: int) -> None:
    """Train a queued cycle's SSL model ahead of its select step. On a node with several
    GPUs, launch it the standard way, one process per GPU, and it trains with DDP:
    torchrun --nproc_per_node=4 -m flywheel.cli cycle ssl ID"""
    from flywheel.cycle.steps.select import run_ssl_step
    from flywheel.learn.ssl.distributed import distributed_world

    world = distributed_world()
    speaks = world is None or world.rank == 0  # one process reports for the launch
    with workspace(ctx) as ws, progress_bar(f"SSL for cycle {cycle_id}") as advance:
        result = run_ssl_step(ws, cycle_id, lambda e, n, _: advance(e, n) if speaks else None)
    if speaks and result is not None:
        processes = f" on {world.size} processes" if world is not None else ""
        console.print(
            f"cycle {cycle_id}: SSL run {result.run['key'] if result.run else '-'} ready"
            f"{processes} (final loss {result.losses[-1] if result.losses else float('nan'):.3f})"
        )


@cycle_app.command("list")
def cycle_list(ctx: typer.Context) -> None:
    """Every cycle with its state and headline metrics."""
    with workspace(ctx) as ws, ws.db.session() as s:
        rows = s.scalars(select(Cycle).order_by(Cycle.id)).all()
    table = Table("id", "state", "step", "progress", "test acc", "dataset version", "started")
    for c in rows:
        table.add_row(
            str(c.id),
            c.state,
            c.step or "-",
            f"{100 * c.progress:.0f}%",
            fmt((c.metrics or {}).get("test_accuracy")),
            (c.dataset_version_out or "-")[:12],
            f"{c.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table if rows else "no cycles yet: run `flywheel cycle run`")


@cycle_app.command("status")
def cycle_status(ctx: typer.Context, cycle_id: int) -> None:
    """One cycle: state, step, progress, metrics, error."""
    with workspace(ctx) as ws, ws.db.session() as s:
        c = s.get(Cycle, cycle_id)
        if c is None:
            raise NotFoundError(f"no cycle {cycle_id}")
    console.print(
        f"[bold]cycle {c.id}[/] {c.state} (step {c.step or '-'}, {100 * c.progress:.0f}%)"
        + (f": {c.message}" if c.message else "")
    )
    console.print(f"  trigger  {c.trigger or '-'}")
    if c.worker:
        console.print(f"  worker   {c.worker}")
    console.print(f"  dataset  {c.dataset_version_in or '-'} -> {c.dataset_version_out or '-'}")
    console.print(f"  mlflow   run {c.mlflow_run_id or '-'}")
    if c.error:
        console.print(f"  [red]error[/]    {c.error}")
    for key, value in (c.metrics or {}).items():
        if key != "gate":
            console.print(f"  {key:<18} {value}")
    if c.metrics and "gate" in c.metrics:
        console.print(f"  gate               {c.metrics['gate']['reason']}")


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """Registered model versions with their aliases and test accuracy."""
    from flywheel.learn.registry import DATASET_VERSION_TAG

    registry = registry_for(ctx.obj)
    versions = registry.versions()
    table = Table("version", "test acc", "cycle", "dataset", "created", box=box.SIMPLE_HEAD)
    table.add_column("aliases", no_wrap=True)
    for v in versions:
        table.add_row(
            v.version,
            v.tags.get("test_accuracy", "-"),
            v.tags.get("cycle_id", "-"),
            v.tags.get(DATASET_VERSION_TAG, "-")[:12],
            f"{v.created_at:%Y-%m-%d %H:%M}",
            ", ".join(v.aliases) or "-",
        )
    console.print(table if versions else "no models yet: run `flywheel cycle run`")


@models_app.command("promote")
def models_promote(ctx: typer.Context, version: str) -> None:
    """Make model VERSION the champion (served by predictions), with the pseudo-labels of
    the dataset version it was trained on."""
    from flywheel.cycle.champion import promote_champion
    from flywheel.cycle.guard import holder_id

    with workspace(ctx) as ws:
        reason = "promoted by hand (flywheel models promote)"
        move = promote_champion(ws, registry_for(ws.settings), version, holder_id("cli"), reason)
    console.print(f"[green]champion[/] is now version {move.model.version}")
    print_label_restore(move)


@models_app.command("rollback")
def models_rollback(ctx: typer.Context) -> None:
    """Make the previous champion the champion again, with the pseudo-labels of the dataset
    version it was trained on (those accepted since are retracted; people's labels stay)."""
    from flywheel.cycle.champion import rollback_champion
    from flywheel.cycle.guard import holder_id

    with workspace(ctx) as ws:
        move = rollback_champion(ws, registry_for(ws.settings), holder_id("cli"))
    console.print(f"[green]rolled back:[/] champion is version {move.model.version} again")
    print_label_restore(move)


def print_label_restore(move: ChampionMove) -> None:
    if move.labels is None:
        console.print("[yellow]its dataset version is not recorded: labels left as they are[/]")
        return
    r = move.labels
    console.print(f"pseudo-labels of its dataset version {r.version[:12]} are current again:")
    console.print(f"  {r.retracted} retracted, {r.restored} restored")
    if r.kept_human:
        console.print(f"  {r.kept_human} left as people labeled them since")
