"""The data profile: what the settings leave open is decided from the data, recorded with
the cycle and its model, and reused by later cycles."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.cycle.state import PROFILE, cycle_learning, load_cycle
from flywheel.learn.registry import ModelRegistry
from flywheel.store.ingest import Candidate, SplitPlan, ingest_candidates
from flywheel.workspace import open_workspace
from tests.flywheel.cycle.test_runner import TINY, ingest_digits

AUTO = {k: v for k, v in TINY.items() if k != "augment"}  # channels and augment: defaults


def colour_png(cls: int, i: int) -> bytes:
    """16x16 noisy colour squares: class 0 reddish, class 1 bluish (colour is the class)."""
    rng = np.random.default_rng(i)
    img = rng.integers(0, 60, (16, 16, 3)).astype(np.uint8)
    img[..., 0 if cls == 0 else 2] += 150
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_a_grey_project_gets_its_profile_from_the_data(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "d", learning=AUTO)
    assert settings.learning.channels is None and settings.learning.augment == "auto"
    ws = open_workspace(settings)
    ingest_digits(ws, n=300, labels_per_class=4)
    registry = ModelRegistry.from_settings(settings)
    first = run_cycle(ws, registry, settings.learning)
    profile = load_cycle(ws, first.cycle_id).outputs[PROFILE]
    assert profile["channels"] == 1 and "is colour" in profile["channels_reason"]
    assert profile["augment"] in ("digits", "natural") and profile["augment_reason"]
    assert first.metrics["profile"] == profile
    learning = cycle_learning(load_cycle(ws, first.cycle_id))
    assert (learning.channels, learning.augment) == (1, profile["augment"])
    run = registry.client.get_run(load_cycle(ws, first.cycle_id).mlflow_run_id)
    assert run.data.params["channels"] == "1"
    assert run.data.params["profile_augment_reason"] == profile["augment_reason"]

    second = run_cycle(ws, registry, settings.learning)
    again = load_cycle(ws, second.cycle_id).outputs[PROFILE]
    assert again["augment"] == profile["augment"]
    assert again["augment_reason"].startswith("as decided before: ")
    assert second.metrics["started_from"].startswith("champion ")  # warm start
    ws.close()


def test_colour_photos_train_in_colour_without_a_setting(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "d", learning=AUTO)
    ws = open_workspace(settings)
    cands = [
        Candidate(f"c{cls}-{i}", lambda c=cls, i=i: colour_png(c, i), str(cls))
        for cls in (0, 1)
        for i in range(40)
    ]
    plan = SplitPlan(labels_per_class=4, test_fraction=0.3, seed=0)
    ingest_candidates(ws.db, ws.blobs, cands, "colour", ws.settings.ingest, plan)
    ws.versions.snapshot("seed labels")
    registry = ModelRegistry.from_settings(settings)
    result = run_cycle(ws, registry, settings.learning)
    profile = result.metrics["profile"]
    assert profile["channels"] == 3 and "colour" in profile["channels_reason"]
    assert result.metrics["input"]["channels"] == 3
    assert registry.get(result.model_version).tags["channels"] == "3"
    ws.close()


def test_settings_that_name_a_profile_win(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "d", learning={**TINY, "channels": 1})
    ws = open_workspace(settings)
    ingest_digits(ws, n=200, labels_per_class=3)
    result = run_cycle(ws, ModelRegistry.from_settings(settings), settings.learning)
    assert result.metrics["profile"] == {
        "channels": 1,
        "channels_reason": "set in learning.channels",
        "augment": "digits",
        "augment_reason": "set in learning.augment",
    }
    ws.close()
