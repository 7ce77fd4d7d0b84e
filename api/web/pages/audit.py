"""The label audit page: the library's audit of the newest cycle's embeddings (labels that
look wrong, worst first, a page at a time) and its annotator report; and queueing the
audit's issues for review.

Both are computed once per finished cycle and again after ``web.insight_cache_seconds`` (new
labels and feedback change them); once a value exists, page views never wait for a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from api.context import ApiContext
from api.web import queries
from api.web.state import Insight, WebState, insight
from flywheel.errors import NotFoundError
from flywheel.feedback.consensus import AnnotatorReport, annotator_report
from flywheel.insights.label_audit import LabelIssue, audit_labels, queue_audit_for_review


def audit_insight(ctx: ApiContext, web: WebState, stale_ok: bool = True) -> Insight:
    """The label audit on the newest cycle's embeddings (recomputed per new cycle)."""
    signature = queries.latest_finished_cycle(ctx.ws.db)
    ttl = ctx.settings.web.insight_cache_seconds
    return insight(
        web.memo, "audit", signature, lambda: audit_labels(ctx.ws), ttl, stale_ok=stale_ok
    )


def annotators_insight(ctx: ApiContext, web: WebState) -> Insight:
    """How reliable and how much in agreement the people who send feedback are."""

    def compute() -> AnnotatorReport:
        return annotator_report(ctx.ws.db, ctx.settings.consensus)

    signature = queries.latest_finished_cycle(ctx.ws.db)
    return insight(
        web.memo, "annotators", signature, compute, ctx.settings.web.insight_cache_seconds
    )


@dataclass(frozen=True)
class IssueView:
    issue: LabelIssue
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
    """One page of issues from ``offset``, each with its sample's label now and its open
    review item, if any."""
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
    return int(queue_audit_for_review(ctx.ws, report))
