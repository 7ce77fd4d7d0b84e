"""Start a cycle (answered at once, run in the background) and follow its progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response
from pydantic import ValidationError
from sqlalchemy import func, select

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import MAX_ID, Limit, Offset
from api.schemas_engineer import CycleAccepted, CycleIn, CycleOut, CyclePage
from flywheel.config import LearningSettings
from flywheel.db import Cycle
from flywheel.errors import ConflictError, InvalidInputError, NotFoundError

router = APIRouter(prefix="/v1", tags=["cycles"])

NOT_FOUND = {404: {"model": ErrorResponse, "description": "unknown cycle id"}}


@router.post(
    "/cycles",
    response_model=CycleAccepted,
    status_code=202,
    responses={
        **COMMON_RESPONSES,
        409: {
            "model": ErrorResponse,
            "description": "a cycle is already queued or running, or cycles are off here",
        },
    },
)
def start(
    ctx: Context,
    key: EngineerKey,
    response: Response,
    body: Annotated[CycleIn | None, Body()] = None,
) -> CycleAccepted:
    """Queue one cycle (embed, select, version, train, evaluate, gate) and answer at once.

    Poll `GET /v1/cycles/{id}` for its progress. One cycle runs at a time.
    """
    runner = ctx.cycles
    if runner is None:
        raise ConflictError(
            "cycles are off in this server: configure a broker (workers run them) or turn "
            "api.run_cycles_in_process on"
        )
    learning = ctx.settings.learning
    if body is not None and body.learning is not None:
        overrides = body.learning.model_dump(exclude_unset=True)
        try:
            learning = LearningSettings.model_validate({**learning.model_dump(), **overrides})
        except ValidationError as exc:  # the overrides are valid alone, not with the rest
            raise InvalidInputError(f"invalid learning settings: {exc}") from None
    cycle_id = runner.submit(learning)
    url = f"/v1/cycles/{cycle_id}"
    response.headers["Location"] = url
    return CycleAccepted(id=cycle_id, state="queued", status_url=url)


@router.get("/cycles", response_model=CyclePage, responses=COMMON_RESPONSES)
def list_cycles(ctx: Context, key: EngineerKey, limit: Limit = 50, offset: Offset = 0) -> CyclePage:
    """Cycles, newest first."""
    with ctx.ws.db.session() as s:
        total = s.scalar(select(func.count()).select_from(Cycle)) or 0
        rows = s.scalars(select(Cycle).order_by(Cycle.id.desc()).limit(limit).offset(offset))
        items = [CycleOut.model_validate(c, from_attributes=True) for c in rows]
    return CyclePage(items=items, total=int(total), limit=limit, offset=offset)


@router.get(
    "/cycles/{cycle_id}", response_model=CycleOut, responses={**COMMON_RESPONSES, **NOT_FOUND}
)
def get_cycle(
    ctx: Context, key: EngineerKey, cycle_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> CycleOut:
    """One cycle: state, current step, progress (0..1), metrics, error."""
    with ctx.ws.db.session() as s:
        row = s.get(Cycle, cycle_id)
        if row is None:
            raise NotFoundError(f"no cycle {cycle_id}")
        return CycleOut.model_validate(row, from_attributes=True)
