"""``flywheel feedback``: turn users' feedback into labels now, and see who to trust."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flywheel.cli.common import console, fmt, shown, workspace
from flywheel.feedback.consensus import annotator_report, resolve_feedback

feedback_app = typer.Typer(no_args_is_help=True, help="Users' feedback: consensus, annotators.")


@feedback_app.command("resolve")
def resolve(ctx: typer.Context) -> None:
    """Run the consensus now (every cycle also runs it first): labels and review items."""
    with workspace(ctx) as ws:
        r = resolve_feedback(ws.db, ws.settings.consensus)
    console.print(
        f"{r.samples} samples with feedback from {r.annotators} annotators: "
        f"[green]{r.labels_written} labels written[/], {r.unchanged} unchanged, "
        f"{r.retracted} retracted; review: {r.review_opened} opened, "
        f"{r.review_updated} updated, {r.review_closed} closed; "
        f"{r.measured_only} gold/test samples only measured annotators"
    )


@feedback_app.command("annotators")
def annotators(
    ctx: typer.Context,
    min_overlap: Annotated[
        int, typer.Option(min=1, help="Shared samples a pair needs for a kappa.")
    ] = 2,
) -> None:
    """Each annotator's estimated reliability and accuracy on gold; agreement (kappa)."""
    with workspace(ctx) as ws:
        r = annotator_report(ws.db, ws.settings.consensus, min_overlap)
    table = Table("annotator", "reliability", "votes", "gold accuracy", "gold votes")
    for a in sorted(r.annotators, key=lambda a: a.accuracy):
        table.add_row(shown(a.annotator), fmt(a.accuracy), str(a.n_votes), fmt(a.gold_accuracy),
                      str(a.n_gold))  # fmt: skip
    console.print(table)
    kappa = "-" if r.fleiss_kappa is None else f"{r.fleiss_kappa:.3f}"
    console.print(
        f"{r.votes} votes on {r.samples} samples; Fleiss' kappa {kappa} over "
        f"{r.items_multi_rated} samples rated by two or more"
    )
    pairs = [p for p in r.pairwise_kappa if p.kappa is not None]
    if pairs:
        low = Table("annotator a", "annotator b", "shared", "Cohen's kappa", title="lowest pairs")
        for p in sorted(pairs, key=lambda p: p.kappa)[:10]:  # type: ignore[arg-type, return-value]
            a, b = shown(p.annotator_a), shown(p.annotator_b)
            low.add_row(a, b, str(p.n_items), f"{p.kappa:.3f}")
        console.print(low)
