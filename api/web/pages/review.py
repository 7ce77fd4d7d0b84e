"""The review queue page: one page of open items, most helpful first (the library's order),
each with its evidence laid out (model and kNN scores, neighbours with their labels now,
users' votes, the audit's finding) and a key per label for deciding fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.context import ApiContext
from api.web import queries
from flywheel.db.models import ReviewReason, ReviewState
from flywheel.feedback.review import ReviewPage, ReviewRecord, list_review

REASON_TEXT = {
    ReviewReason.UNCERTAIN: "uncertain pseudo-label",
    ReviewReason.FEEDBACK_CONFLICT: "users disagree",
    ReviewReason.LABEL_AUDIT: "label audit: likely wrong",
}
NEIGHBOURS_SHOWN = 8
# Evidence keys the page lays out in their own places; any other key is listed as is.
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


def _neighbours(evidence: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """(sample id, similarity) of the first neighbours shown; evidence stores each as a
    pair, or (older items) as a bare id."""
    out = []
    for pair in (evidence.get("neighbors") or [])[:NEIGHBOURS_SHOWN]:
        sid = pair[0] if isinstance(pair, list | tuple) and pair else pair
        sim = pair[1] if isinstance(pair, list | tuple) and len(pair) > 1 else None
        out.append((str(sid), _float(sim)))
    return out


def review_view(r: ReviewRecord, labels_now: dict[str, tuple[str, str]]) -> ReviewView:
    """One item as the page shows it; ``labels_now`` holds the current labels of the item's
    sample and of its neighbours."""
    ev = r.evidence or {}
    neighbours = []
    for sid, sim in _neighbours(ev):
        now = labels_now.get(sid)
        neighbours.append(Neighbour(sid, sim, now[0] if now else None, now[1] if now else None))
    posterior = sorted(
        ((str(k), float(v)) for k, v in (ev.get("posterior") or {}).items()),
        key=lambda kv: -kv[1],
    )
    audit = None
    if r.reason == ReviewReason.LABEL_AUDIT:
        audit = {k: ev.get(k) for k in ("given", "source", "annotator", "self_confidence")}
        audit["suggested_prob"] = ev.get("suggested_prob", r.score)
    other = [(k, str(v)[:200]) for k, v in sorted(ev.items()) if k not in KNOWN_EVIDENCE]
    return ReviewView(
        id=r.id,
        sample_id=r.sample_id,
        reason=r.reason,
        reason_text=REASON_TEXT.get(r.reason, r.reason),
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
    """A page of open items (of proposed ``label`` only, when given) from ``offset``."""
    limit = ctx.settings.web.page_size
    page = open_review_page(ctx, label, limit, offset)
    wanted = {r.sample_id for r in page.items}
    for r in page.items:
        wanted.update(sid for sid, _ in _neighbours(r.evidence or {}))
    labels_now = queries.current_labels(ctx.ws.db, wanted)
    labels = ctx.labels()
    return ReviewScreen(
        items=[review_view(r, labels_now) for r in page.items],
        total=page.total,
        offset=offset,
        limit=limit,
        label=label,
        labels=labels,
        shortcuts=label_shortcuts(labels),
        open_by_label=queries.open_review_by_label(ctx.ws.db),
    )
