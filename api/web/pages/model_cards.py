"""The dashboard's model cards (champion, and the challenger when there is one) and the
links from models and cycles to their MLflow runs.

MLflow is asked at most every ``api.champion_refresh_seconds`` for the models, and once per
tracking server for the experiment id the links need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.context import ApiContext
from api.web import queries
from api.web.queries import CycleRow
from api.web.state import WebState
from flywheel.learn.registry import CHALLENGER, CHAMPION, ModelVersion


@dataclass(frozen=True)
class MlflowLink:
    run_id: str
    url: str | None  # a tracking server's run page
    command: str | None  # a local store: how to open it


@dataclass(frozen=True)
class ModelCard:
    role: str  # champion | challenger
    version: str
    aliases: tuple[str, ...]
    created_at: Any
    tags: dict[str, str]
    cycle: CycleRow | None  # the cycle that trained it, with its gate decision
    gate: dict[str, Any] | None
    mlflow: MlflowLink | None
    classes: list[str]  # the model's classes, in the order of the gate's per-class lists


def is_tracking_server(uri: str | None) -> bool:
    return uri is not None and uri.startswith(("http://", "https://"))


def run_link(
    tracking_uri: str, experiment_id: str | None, run_id: str, store_uri: str
) -> MlflowLink:
    """A tracking server's run page (``<uri>/#/experiments/<exp>/runs/<run>``); for a local
    store (or an unknown experiment), the run id and the ``mlflow ui`` command."""
    if is_tracking_server(tracking_uri) and experiment_id is not None:
        url = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return MlflowLink(run_id, url, None)
    return MlflowLink(run_id, None, f"mlflow ui --backend-store-uri {store_uri}")


def mlflow_link(ctx: ApiContext, web: WebState, run_id: str | None) -> MlflowLink | None:
    """The link to run ``run_id``; None without a run."""
    if not run_id:
        return None
    settings = ctx.settings
    uri = settings.mlflow_tracking_uri
    experiment = None
    if is_tracking_server(uri):

        def experiment_id() -> str | None:  # asked once per server, then remembered
            exp = ctx.registry.client.get_experiment_by_name(settings.mlflow.experiment)
            return exp.experiment_id if exp is not None else None

        experiment = web.memo.get("mlflow_experiment", uri, experiment_id).value
    return run_link(uri, experiment, run_id, uri)


def _card(ctx: ApiContext, web: WebState, role: str, m: ModelVersion) -> ModelCard:
    cycle_tag = m.tags.get("cycle_id", "")
    cycle = queries.cycle_by_id(ctx.ws.db, int(cycle_tag)) if cycle_tag.isdigit() else None
    gate = cycle.metrics.get("gate") if cycle is not None else None
    return ModelCard(
        role=role,
        version=m.version,
        aliases=m.aliases,
        created_at=m.created_at,
        tags=m.tags,
        cycle=cycle,
        gate=gate,
        mlflow=mlflow_link(ctx, web, m.run_id),
        classes=list(m.classes),
    )


def model_cards(ctx: ApiContext, web: WebState) -> list[ModelCard]:
    """Champion and challenger (the newest model, when it is not the champion)."""

    def load() -> list[ModelCard]:
        champion, latest = ctx.registry.champion(), ctx.registry.latest()
        cards = [_card(ctx, web, CHAMPION, champion)] if champion else []
        if latest is not None and (champion is None or latest.version != champion.version):
            cards.append(_card(ctx, web, CHALLENGER, latest))
        return cards

    ttl = ctx.settings.api.champion_refresh_seconds
    return web.memo.get("models", None, load, ttl_s=ttl).value


def champion_version(ctx: ApiContext, web: WebState) -> str | None:
    return next((c.version for c in model_cards(ctx, web) if c.role == CHAMPION), None)
