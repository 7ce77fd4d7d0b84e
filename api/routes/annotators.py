"""How reliable the people who send feedback are, and how much they agree."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES
from api.schemas_engineer import AnnotatorReportOut
from flywheel.feedback.consensus import annotator_report

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
    report = annotator_report(ctx.ws.db, ctx.settings.consensus, min_overlap)
    return AnnotatorReportOut.model_validate(report, from_attributes=True)
