"""``flywheel serve`` (the HTTP API), ``flywheel worker`` (Celery) and ``flywheel keys``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli.common import console, err_console, shown, workspace
from flywheel.config import Settings
from flywheel.errors import FlywheelError
from flywheel.serve.api_keys import create_key, list_keys, revoke_key

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, revoke.")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help="app or engineer")],
    tenant: Annotated[
        str, typer.Option("--tenant", help="The app (tenant) the key acts for.")
    ] = "default",
    name: Annotated[str, typer.Option("--name", help="A note: who or what uses it.")] = "",
) -> None:
    """Create a key. The key is printed once; only its hash is stored."""
    with workspace(ctx) as ws:
        info, token = create_key(ws.db, role, tenant, name)
    err_console.print(
        f"[green]created[/] {info.role.value} key [bold]{info.id}[/] for tenant {info.tenant}"
        " — store it now, it cannot be shown again:"
    )
    console.print(token, soft_wrap=True)  # alone on stdout, so scripts can capture it


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """All keys (never their secrets)."""
    with workspace(ctx) as ws:
        keys = list_keys(ws.db)
    table = Table("id", "role", "tenant", "name", "created", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.role.value,
            k.tenant,
            shown(k.name),
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key by id: requests with it get 401 (within api.auth_cache_seconds)."""
    with workspace(ctx) as ws:
        info = revoke_key(ws.db, key_id)
    console.print(f"[yellow]revoked[/] {info.id} ({info.role.value}, tenant {info.tenant})")


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Default: settings api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: settings api.port.")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    # The API package is imported here, at the edge: the library itself never imports it.
    from api.app import create_app

    settings: Settings = ctx.obj
    with workspace(ctx):  # create and migrate the data dir before the first request
        pass
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        log_level="info",
        # On SIGTERM, requests still open after this are cancelled: a slow client or a
        # remote read must not keep the server from stopping.
        timeout_graceful_shutdown=settings.api.shutdown_grace_s,
    )


def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option(help="Comma-separated: cpu, gpu or both.")] = "cpu,gpu",
    concurrency: Annotated[int, typer.Option(min=1, help="Task processes.")] = 1,
    name: Annotated[str, typer.Option(help="Worker name (host appended).")] = "flywheel",
) -> None:
    """Run a Celery worker on the configured broker (broker.url)."""
    # Imported here, at the edge: the library itself never imports Celery.
    from workers.app import QUEUES, create_celery

    settings: Settings = ctx.obj
    if settings.broker.url is None:
        raise FlywheelError(
            "no broker configured (broker.url): with the embedded default, tasks run "
            "in-process and no worker is needed"
        )
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    if not chosen or set(chosen) - set(QUEUES):
        raise FlywheelError(f"unknown queue in {queues!r}: choose from {', '.join(QUEUES)}")
    with workspace(ctx):  # migrate the database once, before the pool processes start
        pass
    app = create_celery(settings)
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(chosen),
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def beat(ctx: typer.Context) -> None:
    """Run Celery beat: relays queued cycles to the broker, checks the feedback trigger
    (triggers.feedback_count) and starts scheduled cycles (triggers.schedule_*)."""
    from workers.app import create_celery

    settings: Settings = ctx.obj
    if settings.broker.url is None:
        raise FlywheelError("no broker configured (broker.url): beat needs one")
    with workspace(ctx) as ws:
        schedule_file = Path(ws.settings.data_dir) / "celerybeat-schedule"
    app = create_celery(settings)
    for name, entry in app.conf.beat_schedule.items():
        err_console.print(f"[bold]beat[/] {name}: {entry['task']} every {entry['schedule']}")
    app.start(["beat", "--schedule", str(schedule_file), "--loglevel", "INFO"])
