"""The dashboard: cycles and dataset versions (paged), the model cards, the drift watch,
the cycle chart and the embedding map of the pool.

Charts are drawn once per change of what they show (a cycle added or moved on, a new
finished cycle); the drift check once per champion and finished cycle, and again after
``web.insight_cache_seconds`` (new production inputs change it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from api.context import ApiContext
from api.web import queries
from api.web.charts import cycles_chart_png
from api.web.pages.model_cards import (
    MlflowLink,
    ModelCard,
    champion_version,
    mlflow_link,
    model_cards,
)
from api.web.queries import CycleRow
from api.web.state import Insight, WebState, insight
from flywheel.datasets.versions import VersionInfo
from flywheel.insights.drift import DriftReport, measure_drift
from flywheel.insights.embedding_map import embedding_map_png

CHART_CYCLES = 100  # the chart shows at most this many of the newest cycles
ColorBy = Literal["label", "source"]  # what the embedding map's colours show


@dataclass(frozen=True)
class CycleView:
    row: CycleRow
    mlflow: MlflowLink | None


@dataclass
class Dashboard:
    cycles: list[CycleView]
    cycles_total: int
    cycles_offset: int
    versions: list[VersionInfo]
    versions_total: int
    versions_offset: int
    models: list[ModelCard]
    drift: Insight
    drift_settings: Any
    active_cycle: int | None
    chart_version: str  # changes when the chart does: the browser refetches only then
    limit: int


def drift_insight(ctx: ApiContext, web: WebState, force: bool = False) -> Insight:
    """The drift check of the current champion (cached; ``force`` measures now)."""
    settings = ctx.settings

    def compute() -> DriftReport | None:
        return measure_drift(ctx.ws, ctx.registry, settings.drift)

    signature = (champion_version(ctx, web), queries.latest_finished_cycle(ctx.ws.db))
    ttl = settings.web.insight_cache_seconds
    return insight(web.memo, "drift", signature, compute, ttl, force)


def dashboard(
    ctx: ApiContext, web: WebState, cycles_offset: int, versions_offset: int
) -> Dashboard:
    """A page of cycles and one of dataset versions (newest first) and the panels."""
    limit = ctx.settings.web.page_size
    db = ctx.ws.db
    cycles, cycles_total = queries.cycles_page(db, limit, cycles_offset)
    versions, versions_total = queries.versions_page(db, limit, versions_offset)
    runner = ctx.cycles
    return Dashboard(
        cycles=[CycleView(c, mlflow_link(ctx, web, c.mlflow_run_id)) for c in cycles],
        cycles_total=cycles_total,
        cycles_offset=cycles_offset,
        versions=versions,
        versions_total=versions_total,
        versions_offset=versions_offset,
        models=model_cards(ctx, web),
        drift=drift_insight(ctx, web),
        drift_settings=getattr(ctx.settings, "drift", None),
        active_cycle=runner.active() if runner is not None else None,
        chart_version="-".join(str(p) for p in queries.cycles_signature(db)[:2]),
        limit=limit,
    )


def cycles_chart(ctx: ApiContext, web: WebState) -> bytes:
    """The chart of the newest ``CHART_CYCLES`` cycles, as a PNG."""
    signature = queries.cycles_signature(ctx.ws.db)

    def draw() -> bytes:
        return cycles_chart_png(queries.recent_cycles(ctx.ws.db, CHART_CYCLES))

    return web.memo.get("cycles_chart", signature, draw).value


def embedding_map(ctx: ApiContext, web: WebState, color_by: ColorBy) -> bytes | None:
    """The pool's 2-D map from the newest cycle's embeddings, drawn once per cycle (and
    kept on disk, so a restart does not redraw it). None before the first cycle."""
    cycle_id = queries.latest_finished_cycle(ctx.ws.db)

    def draw() -> bytes | None:
        path = web.cache_dir / f"embedding_map_c{cycle_id}_{color_by}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with web.plot_lock:  # the library draws with pyplot: one figure at a time
                made = embedding_map_png(ctx.ws, tmp, color_by=color_by)
            if made is None:
                return None
            Path(made).replace(path)
        return path.read_bytes()

    return web.memo.get(f"embedding_map_{color_by}", cycle_id, draw).value
