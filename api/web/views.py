"""What each page shows, gathered from the library (and ``api.web.queries``) into plain
dataclasses the templates render. No decisions are made here; the library makes them.

The insight modules (``flywheel.insights.label_audit``, ``flywheel.insights.drift``, ``flywheel.insights.embedding_map``)
are imported where they are used, so a page without one still renders and says so.
"""

from __future__ import annotations

import importlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from api.context import ApiContext
from api.web import queries
from api.web.queries import CycleRow
from api.web.state import Computed, WebState
from flywheel.db.models import ReviewState
from flywheel.errors import NotFoundError
from flywheel.feedback.review import ReviewPage, list_review
from flywheel.learn.registry import ModelVersion
from flywheel.store.images import decode_for_display

log = logging.getLogger("flywheel.api.web")

REASONS = {
    "uncertain": "uncertain pseudo-label",
    "feedback_conflict": "users disagree",
    "label_audit": "label audit: likely wrong",
}
NEIGHBOURS_SHOWN = 8
CHART_CYCLES = 100  # the chart shows at most this many of the newest cycles


class Unavailable(Exception):
    """An insight whose library module is not installed in this build."""


def optional(module: str) -> Any:
    """``flywheel.<module>`` or Unavailable: the page shows "not available" for it."""
    try:
        return importlib.import_module(f"flywheel.{module}")
    except ImportError as exc:
        raise Unavailable(f"flywheel.{module} is not available in this build ({exc})") from None


# --- thumbnails ---------------------------------------------------------------------------
def thumbnail_png(data: bytes, size: int) -> bytes:
    """A PNG whose longer side is ``size``: small images are scaled up by a whole factor
    with nearest-neighbour (so an 8x8 digit shows crisp pixels), large ones down smoothly."""
    img = decode_for_display(data, size)  # a large upload is never decoded whole
    longer = max(img.size)
    if longer < size:
        factor = max(1, size // longer)
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    elif longer > size:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def placeholder_png(size: int, text: str = "?") -> bytes:
    """Shown for a sample whose bytes cannot be read: the page stays usable."""
    img = Image.new("RGB", (size, size), (230, 230, 230))
    ImageDraw.Draw(img).text((size // 2 - 3, size // 2 - 6), text, fill=(120, 120, 120))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- review -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Neighbour:
    sample_id: str
    similarity: float | None
    label: str | None
    source: str | None


@dataclass(frozen=True)
class ReviewView:
    id: int
    sample_id: str
    reason: str
    reason_text: str
    proposed_label: str | None
    score: float
    cycle_id: int | None
    current: tuple[str, str] | None  # the sample's label now: (label, source)
    model_prob: float | None
    knn_share: float | None
    threshold: float | None
    neighbours: list[Neighbour]
    votes: list[dict[str, Any]]
    posterior: list[tuple[str, float]]  # most probable first
    audit: dict[str, Any] | None
    other: list[tuple[str, str]]  # evidence this page has no special place for


@dataclass(frozen=True)
class ReviewScreen:
    items: list[ReviewView]
    total: int
    offset: int
    limit: int
    label: str | None
    labels: list[str]
    shortcuts: list[tuple[str, str | None]]  # (label, key)
    open_by_label: dict[str | None, int]


def label_shortcuts(labels: list[str]) -> list[tuple[str, str | None]]:
    """A key per label: a one-digit label keeps its own digit; the others get the free
    digits in order (1..9, 0); labels past ten have none (the picker, ``c``, finds them)."""
    own = {label for label in labels if len(label) == 1 and label.isdigit()}
    free = [d for d in "1234567890" if d not in own]
    out: list[tuple[str, str | None]] = []
    for label in labels:
        if label in own:
            out.append((label, label))
        else:
            out.append((label, free.pop(0) if free else None))
    return out


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) else None


KNOWN_EVIDENCE = {
    "classifier_prob",
    "knn_share",
    "threshold",
    "neighbors",
    "votes",
    "posterior",
    "score",
    "decision",
    "given",
    "source",
    "annotator",
    "self_confidence",
    "suggested_prob",
    "label_id",
    "embedding_cycle_id",
}


def _review_view(
    r: Any, labels_now: dict[str, tuple[str, str]], reason_text: dict[str, str]
) -> ReviewView:
    ev = r.evidence or {}
    neighbours = []
    for pair in (ev.get("neighbors") or [])[:NEIGHBOURS_SHOWN]:
        sid = pair[0] if isinstance(pair, list | tuple) and pair else pair
        sim = pair[1] if isinstance(pair, list | tuple) and len(pair) > 1 else None
        now = labels_now.get(str(sid))
        neighbours.append(
            Neighbour(str(sid), _float(sim), now[0] if now else None, now[1] if now else None)
        )
    posterior = sorted(
        ((str(k), float(v)) for k, v in (ev.get("posterior") or {}).items()),
        key=lambda kv: -kv[1],
    )
    audit = None
    if r.reason == "label_audit":
        audit = {k: ev.get(k) for k in ("given", "source", "annotator", "self_confidence")}
        audit["suggested_prob"] = ev.get("suggested_prob", r.score)
    other = [(k, str(v)[:200]) for k, v in sorted(ev.items()) if k not in KNOWN_EVIDENCE]
    return ReviewView(
        id=r.id,
        sample_id=r.sample_id,
        reason=r.reason,
        reason_text=reason_text.get(r.reason, r.reason),
        proposed_label=r.proposed_label,
        score=float(r.score),
        cycle_id=r.cycle_id,
        current=labels_now.get(r.sample_id),
        model_prob=_float(ev.get("classifier_prob")),
        knn_share=_float(ev.get("knn_share")),
        threshold=_float(ev.get("threshold")),
        neighbours=neighbours,
        votes=[v for v in (ev.get("votes") or []) if isinstance(v, dict)],
        posterior=posterior,
        audit=audit,
        other=other,
    )


def open_review_page(ctx: ApiContext, label: str | None, limit: int, offset: int) -> ReviewPage:
    """Open items, most helpful first (uncertainty, then class diversity: the library's)."""
    return list_review(ctx.ws.db, ReviewState.OPEN, label, limit, offset, order="helpful")


def review_screen(ctx: ApiContext, label: str | None, offset: int) -> ReviewScreen:
    limit = ctx.settings.web.page_size
    page = open_review_page(ctx, label, limit, offset)
    wanted = {r.sample_id for r in page.items}
    for r in page.items:
        for pair in ((r.evidence or {}).get("neighbors") or [])[:NEIGHBOURS_SHOWN]:
            wanted.add(str(pair[0] if isinstance(pair, list | tuple) and pair else pair))
    labels_now = queries.current_labels(ctx.ws.db, wanted)
    labels = ctx.labels()
    return ReviewScreen(
        items=[_review_view(r, labels_now, REASONS) for r in page.items],
        total=page.total,
        offset=offset,
        limit=limit,
        label=label,
        labels=labels,
        shortcuts=label_shortcuts(labels),
        open_by_label=queries.open_review_by_label(ctx.ws.db),
    )


# --- models and MLflow --------------------------------------------------------------------
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
        classes=[c for c in m.tags.get("classes", "").split(",") if c],
    )


def model_cards(ctx: ApiContext, web: WebState) -> list[ModelCard]:
    """Champion and challenger (the newest model, when it is not the champion). MLflow is
    asked at most every ``api.champion_refresh_seconds``."""

    def load() -> list[ModelCard]:
        champion, latest = ctx.registry.champion(), ctx.registry.latest()
        cards = [_card(ctx, web, "champion", champion)] if champion else []
        if latest is not None and (champion is None or latest.version != champion.version):
            cards.append(_card(ctx, web, "challenger", latest))
        return cards

    ttl = ctx.settings.api.champion_refresh_seconds
    return web.memo.get("models", None, load, ttl_s=ttl).value


def champion_version(ctx: ApiContext, web: WebState) -> str | None:
    return next((c.version for c in model_cards(ctx, web) if c.role == "champion"), None)


# --- insights -----------------------------------------------------------------------------
@dataclass
class Insight:
    """A cached result or why there is none."""

    value: Any = None
    computed_at: Any = None
    unavailable: str | None = None  # the module is missing
    error: str | None = None  # computing it failed
    refreshing: bool = False  # an outdated value, while the new one is computed


def insight(
    web: WebState,
    name: str,
    signature: Any,
    compute: Callable[[], Any],
    ttl_s: float | None,
    force: bool = False,
    stale_ok: bool = True,
) -> Insight:
    try:
        done: Computed[Any] = web.memo.get(name, signature, compute, ttl_s, force, stale_ok)
    except Unavailable as exc:
        return Insight(unavailable=str(exc))
    except Exception as exc:  # an insight that fails must not take the page down
        log.exception("computing %s failed", name)
        return Insight(error=f"{type(exc).__name__}: {exc}")
    return Insight(done.value, done.at, refreshing=done.stale)


def drift_insight(ctx: ApiContext, web: WebState, force: bool = False) -> Insight:
    """The drift check of the current champion (cached; ``force`` measures now)."""
    settings = ctx.settings

    def compute() -> Any:
        drift = optional("drift")
        return drift.measure_drift(ctx.ws, ctx.registry, settings.drift)

    signature = (champion_version(ctx, web), queries.latest_finished_cycle(ctx.ws.db))
    ttl = settings.web.insight_cache_seconds
    return insight(web, "drift", signature, compute, ttl, force)


def audit_insight(ctx: ApiContext, web: WebState, stale_ok: bool = True) -> Insight:
    """The label audit on the newest cycle's embeddings (recomputed per new cycle)."""

    def compute() -> Any:
        return optional("label_audit").audit_labels(ctx.ws)

    signature = queries.latest_finished_cycle(ctx.ws.db)
    ttl = ctx.settings.web.insight_cache_seconds
    return insight(web, "audit", signature, compute, ttl, stale_ok=stale_ok)


def annotators_insight(ctx: ApiContext, web: WebState) -> Insight:
    def compute() -> Any:
        from flywheel.feedback.consensus import annotator_report

        return annotator_report(ctx.ws.db, ctx.settings.consensus)

    signature = queries.latest_finished_cycle(ctx.ws.db)
    return insight(web, "annotators", signature, compute, ctx.settings.web.insight_cache_seconds)


@dataclass(frozen=True)
class IssueView:
    issue: Any  # flywheel.insights.label_audit.LabelIssue
    current: tuple[str, str] | None
    open_item: int | None  # its open review item, if queued


@dataclass
class AuditScreen:
    audit: Insight
    annotators: Insight
    issues: list[IssueView] = field(default_factory=list)
    total: int = 0
    offset: int = 0
    limit: int = 0


def audit_screen(ctx: ApiContext, web: WebState, offset: int) -> AuditScreen:
    limit = ctx.settings.web.page_size
    screen = AuditScreen(
        audit_insight(ctx, web), annotators_insight(ctx, web), offset=offset, limit=limit
    )
    report = screen.audit.value
    if report is not None:
        page = report.issues[offset : offset + limit]
        ids = [i.sample_id for i in page]
        now = queries.current_labels(ctx.ws.db, ids)
        queued = queries.open_review_samples(ctx.ws.db, ids)
        screen.issues = [IssueView(i, now.get(i.sample_id), queued.get(i.sample_id)) for i in page]
        screen.total = len(report.issues)
    return screen


def queue_audit(ctx: ApiContext, web: WebState) -> int:
    """Open review items for the audit's issues (the library skips ones already ruled on)."""
    report = audit_insight(ctx, web, stale_ok=False).value  # queue what is true now
    if report is None:
        raise NotFoundError("no label audit to queue: it needs a finished cycle")
    return int(optional("label_audit").queue_audit_for_review(ctx.ws, report))


# --- dashboard ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CycleView:
    row: CycleRow
    mlflow: MlflowLink | None


@dataclass
class Dashboard:
    cycles: list[CycleView]
    cycles_total: int
    cycles_offset: int
    versions: list[Any]
    versions_total: int
    versions_offset: int
    models: list[ModelCard]
    drift: Insight
    drift_settings: Any
    active_cycle: int | None
    chart_version: str  # changes when the chart does: the browser refetches only then
    limit: int


def dashboard(
    ctx: ApiContext, web: WebState, cycles_offset: int, versions_offset: int
) -> Dashboard:
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
    from api.web.charts import cycles_chart_png

    signature = queries.cycles_signature(ctx.ws.db)

    def draw() -> bytes:
        return cycles_chart_png(queries.recent_cycles(ctx.ws.db, CHART_CYCLES))

    return web.memo.get("cycles_chart", signature, draw).value


def embedding_map(ctx: ApiContext, web: WebState, color_by: str) -> bytes | None:
    """The pool's 2-D map from the newest cycle's embeddings, drawn once per cycle (and
    kept on disk, so a restart does not redraw it). None before the first cycle."""
    cycle_id = queries.latest_finished_cycle(ctx.ws.db)

    def draw() -> bytes | None:
        module = optional("embedding_map")
        path = web.cache_dir / f"embedding_map_c{cycle_id}_{color_by}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            with web.plot_lock:  # the library draws with pyplot: one figure at a time
                made = module.embedding_map_png(ctx.ws, tmp, color_by=color_by)
            if made is None:
                return None
            Path(made).replace(path)
        return path.read_bytes()

    return web.memo.get(f"embedding_map_{color_by}", cycle_id, draw).value


@dataclass(frozen=True)
class DiffRow:
    sample_id: str
    before: str | None
    after: str | None
    source_before: str | None
    source_after: str | None


@dataclass(frozen=True)
class DiffGroup:
    """One kind of change from one source, with its count per label (largest first)."""

    change: str
    source: str
    total: int
    by_label: list[tuple[str, int]]


@dataclass(frozen=True)
class DiffView:
    a: Any
    b: Any
    counts: dict[str, int]
    groups: list[DiffGroup]
    examples: dict[str, list[DiffRow]]


def group_summary(summary: list[dict[str, Any]]) -> list[DiffGroup]:
    """The library's per (change, label, source) rows folded into one row per (change,
    source): a page-sized table whatever the number of classes."""
    grouped: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for row in summary:
        grouped.setdefault((row["change"], row["source"]), []).append((row["label"], row["count"]))
    return [
        DiffGroup(change, source, sum(n for _, n in labels), labels)
        for (change, source), labels in grouped.items()
    ]


DIFF_EXAMPLES = 24


def version_diff(ctx: ApiContext, web: WebState, a: str, b: str) -> DiffView:
    """Counts, the per-class summary and the first samples of each kind of change; cached
    by the two version ids (versions never change)."""
    versions = ctx.ws.versions
    info_a, info_b = versions.resolve(a), versions.resolve(b)
    key = (info_a.id, info_b.id)
    cached = web.diffs.get(key)
    if cached is not None:
        return cached
    d = versions.diff(info_a.id, info_b.id)

    def rows(table: Any, kind: str) -> list[DiffRow]:
        out = []
        for r in table.slice(0, DIFF_EXAMPLES).to_pylist():
            if kind == "added":
                out.append(DiffRow(r["sample_id"], None, r["label"], None, r["source"]))
            elif kind == "removed":
                out.append(DiffRow(r["sample_id"], r["label"], None, r["source"], None))
            else:
                pair = (r["label_a"], r["label_b"], r["source_a"], r["source_b"])
                out.append(DiffRow(r["sample_id"], *pair))
        return out

    view = DiffView(
        a=info_a,
        b=info_b,
        counts={
            "added": d.added.num_rows,
            "removed": d.removed.num_rows,
            "relabeled": d.relabeled.num_rows,
            "reattributed": d.reattributed.num_rows,
        },
        groups=group_summary(d.summary()),
        examples={
            kind: rows(getattr(d, kind), kind)
            for kind in ("relabeled", "reattributed", "added", "removed")
        },
    )
    web.diffs.put(key, view)
    return view
