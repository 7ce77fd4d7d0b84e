"""The model registry: list versions, promote one, roll back to the previous champion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from api.auth import Context, EngineerKey
from api.errors import COMMON_RESPONSES, ErrorResponse
from api.schemas import Extended
from api.schemas_engineer import LabelRestoreOut, ModelList, ModelOut, PromoteIn
from flywheel.cycle.champion import ChampionMove, promote_champion, rollback_champion
from flywheel.cycle.guard import holder_id
from flywheel.errors import ConflictError, InvalidInputError
from flywheel.learn.registry import CHAMPION, ModelVersion

router = APIRouter(prefix="/v1/models", tags=["models"])

# A version number, or an alias such as `challenger`. Bounded: a huge number is not a 5xx.
VERSION_PATTERN = "^([0-9]{1,9}|[A-Za-z][A-Za-z0-9_-]{0,63})$"


def model_out(m: ModelVersion, champion: str | None) -> ModelOut:
    return ModelOut.model_validate(
        Extended(m, is_champion=m.version == champion), from_attributes=True
    )


def move_out(move: ChampionMove) -> ModelOut:
    out = model_out(move.model, move.model.version)
    if move.labels is not None:
        out.labels = LabelRestoreOut(**move.labels.as_dict())
    return out


@router.get("", response_model=ModelList, responses=COMMON_RESPONSES)
def list_models(ctx: Context, key: EngineerKey) -> ModelList:
    """Registered model versions (newest first) with their aliases and tags."""
    versions = ctx.registry.versions()
    champion = next((m.version for m in versions if CHAMPION in m.aliases), None)
    return ModelList(
        champion=champion, versions=[model_out(m, champion) for m in reversed(versions)]
    )


@router.post(
    "/{version}/promote",
    response_model=ModelOut,
    responses={
        **COMMON_RESPONSES,
        404: {"model": ErrorResponse, "description": "unknown model version"},
        409: {
            "model": ErrorResponse,
            "description": "it is the champion already, or a cycle is running",
        },
    },
)
def promote(
    ctx: Context,
    key: EngineerKey,
    version: Annotated[
        str, Path(max_length=64, pattern=VERSION_PATTERN, description="A version or an alias")
    ],
    body: Annotated[PromoteIn | None, Body()] = None,
) -> ModelOut:
    """Make a version the champion; predictions use it from the next request on. The
    pseudo-labels of the dataset version it was trained on become current again."""
    reason = body.reason if body is not None and body.reason else f"manual: {key.name}"
    try:
        move = promote_champion(ctx.ws, ctx.registry, version, holder_id("api"), reason)
    except InvalidInputError as exc:  # the registry's "already the champion"
        raise ConflictError(str(exc)) from None
    ctx.champion.invalidate()
    return move_out(move)


@router.post(
    "/rollback",
    response_model=ModelOut,
    responses={
        **COMMON_RESPONSES,
        409: {
            "model": ErrorResponse,
            "description": "there is no earlier champion, or a cycle is running",
        },
    },
)
def rollback(ctx: Context, key: EngineerKey) -> ModelOut:
    """Make the previous champion the champion again, with the pseudo-labels of the
    dataset version it was trained on: those accepted since are retracted (reason
    `rollback`); labels people made are never retracted."""
    try:
        move = rollback_champion(ctx.ws, ctx.registry, holder_id("api"))
    except InvalidInputError as exc:  # "nothing to roll back to"
        raise ConflictError(str(exc)) from None
    ctx.champion.invalidate()
    return move_out(move)
