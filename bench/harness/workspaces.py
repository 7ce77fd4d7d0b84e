"""Temporary project data for benchmarks, built through the library's own functions: scratch
folders, a workspace filled with real digits, and a served project (a promoted champion,
API keys and stored predictions) for feedback to be sent to."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.store.ingest import SplitPlan

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.serve.serving import ServingModel
    from flywheel.workspace import Workspace

# 3 seed labels per class, 20 % test, the rest pool: a small project with every split.
SMALL_PLAN = SplitPlan(labels_per_class=3, test_fraction=0.2, seed=0)


@contextmanager
def scratch(
    prefix: str = "flywheel-bench-", *, keep: Path | None = None, parent: str | None = None
) -> Iterator[Path]:
    """A fresh folder for data dirs and logs, removed after the block; with ``keep``, that
    folder instead (created, kept for inspection); ``parent``: where to make it."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def ingest_digits(ws: Workspace, n: int | None = None, plan: SplitPlan = SMALL_PLAN) -> None:
    """Ingest the first ``n`` (default all 1,797) sklearn digits into ``ws`` as source
    ``digits``, split by ``plan``."""
    from flywheel.store.ingest import ingest_candidates
    from flywheel.store.ingest_sources import digits_candidates

    candidates = digits_candidates()[:n] if n is not None else digits_candidates()
    ingest_candidates(ws.db, ws.blobs, candidates, "digits", ws.settings.ingest, plan)


def promote_champion(settings: Settings, seed: int = 0) -> ServingModel:
    """Register an untrained small CNN (width 4) and promote it: a champion that serves
    predictions at once, without the cost of training one. The model as served."""
    import torch

    from flywheel.learn.backbones import Classifier, build_backbone
    from flywheel.learn.registry import ModelRegistry
    from flywheel.serve.serving import ChampionCache

    registry = ModelRegistry.from_settings(settings)
    torch.manual_seed(seed)
    model = Classifier(build_backbone("small_cnn", 1, None, width=4), 10)
    with registry.run("bench", {"seed": seed}):
        registry.log_model(model, {"classes": ",".join(map(str, range(10))), "cycle_id": "0"})
    registry.promote("1", "bench")
    return ChampionCache(registry, 0).current()


@dataclass(frozen=True)
class FeedbackProject:
    """A served project's credentials and what feedback can refer to."""

    app_key: str
    engineer_key: str
    prediction_ids: list[str]


def feedback_project(
    settings: Settings, predictions: int, tenant: str, n_digits: int = 50
) -> FeedbackProject:
    """A workspace at ``settings`` with ``n_digits`` digits, a promoted champion, an app key
    and an engineer key of ``tenant``, and ``predictions`` stored predictions of that app
    (the samples taken in turn)."""
    from sqlalchemy import select

    from flywheel.db import Sample
    from flywheel.serve.api_keys import create_key
    from flywheel.serve.serving import predict_sample
    from flywheel.workspace import open_workspace

    ws = open_workspace(settings)
    try:
        ingest_digits(ws, n_digits)
        serving = promote_champion(settings)
        _, app_key = create_key(ws.db, "app", tenant, "bench app")
        _, engineer_key = create_key(ws.db, "engineer", tenant, "bench engineer")
        with ws.db.session() as s:
            sample_ids = list(s.scalars(select(Sample.id)))
        ids = [
            predict_sample(
                ws.db, ws.blobs, serving, sample_ids[i % len(sample_ids)], settings.learning, 5,
                tenant,
            ).id
            for i in range(predictions)
        ]  # fmt: skip
    finally:
        ws.close()
    return FeedbackProject(app_key, engineer_key, ids)
