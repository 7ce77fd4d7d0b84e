"""``flywheel serve`` (the HTTP API) and ``flywheel keys`` (API keys)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel.api_keys import create_key, list_keys, revoke_key
from flywheel.cli.common import console, err_console, workspace
from flywheel.config import Settings

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
            k.name,
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
    )
