"""How reliable the people who send feedback are, and how much they agree."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES
from api.schemas_engineer import AnnotatorOut, AnnotatorReportOut, PairKappaOut
from flywheel.consensus import annotator_report

router = APIRouter(prefix="/v1", tags=["annotators"])


@router.get("/annotators", response_model=AnnotatorReportOut, responses=COMMON_RESPONSES)
def annotators(
    ctx: Context,
    key: EngineerKey,
    min_overlap: Annotated[
        int, Query(ge=1, le=10_000, description="Shared samples a pair needs for a kappa")
    ] = 2,
) -> AnnotatorReportOut:
    """Per annotator (`<app>/<user>`): Dawid-Skene reliability and accuracy on gold labels;
    Cohen's kappa per pair and Fleiss' kappa over samples rated by two or more."""
    r = annotator_report(ctx.ws.db, ctx.settings.consensus, min_overlap)
    return AnnotatorReportOut(
        annotators=[
            AnnotatorOut(
                annotator=a.annotator,
                accuracy=a.accuracy,
                n_votes=a.n_votes,
                gold_accuracy=a.gold_accuracy,
                n_gold=a.n_gold,
            )
            for a in r.annotators
        ],
        pairwise_kappa=[
            PairKappaOut(
                annotator_a=p.annotator_a,
                annotator_b=p.annotator_b,
                n_items=p.n_items,
                kappa=p.kappa,
            )
            for p in r.pairwise_kappa
        ],
        fleiss_kappa=r.fleiss_kappa,
        items_multi_rated=r.items_multi_rated,
        samples=r.samples,
        votes=r.votes,
    )
