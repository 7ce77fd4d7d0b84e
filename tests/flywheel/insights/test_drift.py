"""Drift watch: the statistics on real digits, and the check end to end on a workspace."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sqlalchemy import select

from flywheel.config import DriftSettings, Settings
from flywheel.cycle.runner import run_cycle
from flywheel.cycle.triggers import check_drift_and_trigger
from flywheel.db import Cycle, Label, Sample
from flywheel.db.labels import is_current
from flywheel.errors import InvalidInputError
from flywheel.insights.drift import (
    knn_distance_ratio,
    measure_drift,
    median_gamma,
    mmd_permutation_p_value,
    mmd_rbf,
)
from flywheel.learn.registry import ModelRegistry
from flywheel.serve.serving import ServingModel, predict_sample, store_input
from flywheel.workspace import Workspace, open_workspace
from tests.flywheel.cycle.test_runner import TINY, ingest_digits

THRESHOLD = DriftSettings().mmd_threshold


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def test_mmd_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, (5, 3)), rng.normal(0.5, 1, (4, 3))
    g = 0.3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-g * ((a - b) ** 2).sum()))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(a, b) for a in x for b in y) / (5 * 4)
    assert mmd_rbf(x, y, gamma=g) == pytest.approx(xx + yy - 2 * xy)
    # Median heuristic: 1 / (2 median squared distance) of the pooled points.
    pooled = np.concatenate([x, y])
    d = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)[np.triu_indices(9, 1)]
    assert median_gamma(x, y) == pytest.approx(1 / (2 * np.median(d)))
    with pytest.raises(InvalidInputError):
        mmd_rbf(x[:1], y)


def test_no_drift_between_halves_of_digits(digits) -> None:
    x, _ = digits
    order = np.random.default_rng(0).permutation(len(x))
    recent, reference = x[order[:200]], x[order[200:1000]]
    mmd = mmd_rbf(recent, reference)
    assert abs(mmd) < THRESHOLD
    assert mmd_permutation_p_value(recent, reference, permutations=100) > 0.05
    assert 0.85 < knn_distance_ratio(reference, recent) < 1.15


@pytest.mark.parametrize("shift", ["inverted", "two classes", "rotated"])
def test_shifted_digits_drift(digits, shift: str) -> None:
    x, y = digits
    order = np.random.default_rng(1).permutation(len(x))
    reference, rest = x[order[:1000]], order[1000:]
    if shift == "inverted":
        recent = 1.0 - x[rest[:200]]
    elif shift == "two classes":  # a change of mix: every input is still a normal digit
        recent = x[rest[np.isin(y[rest], (0, 1))][:100]]
    else:
        images = (x[rest[:200]].reshape(-1, 8, 8) * 255).astype(np.uint8)
        recent = (
            np.stack(
                [
                    np.asarray(Image.fromarray(im).rotate(25, Image.Resampling.BILINEAR))
                    for im in images
                ]
            ).reshape(len(images), -1)
            / 255.0
        )
    mmd = mmd_rbf(recent, reference)
    assert mmd > THRESHOLD
    assert mmd_permutation_p_value(recent, reference, permutations=100) < 0.05
    ratio = knn_distance_ratio(reference, recent)
    # New-looking inputs sit far from the training data; a new mix of familiar ones does not.
    assert ratio > 1.2 if shift != "two classes" else 0.8 < ratio < 1.2


def test_permutation_p_value_is_a_proper_p_value() -> None:
    rng = np.random.default_rng(3)
    p_values = [
        mmd_permutation_p_value(rng.normal(0, 1, (30, 4)), rng.normal(0, 1, (60, 4)), 50, seed)
        for seed in range(40)
    ]
    assert all(1 / 51 <= p <= 1.0 for p in p_values)
    assert 0.3 < float(np.mean(p_values)) < 0.7  # uniform under no drift
    far = mmd_permutation_p_value(rng.normal(0, 1, (30, 4)), rng.normal(2, 1, (60, 4)), 50)
    assert far == pytest.approx(1 / 51)  # nothing as extreme: the smallest p it can give


# --- end to end ------------------------------------------------------------------------------
def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _predict(ws: Workspace, serving: ServingModel, sample_ids: list[str]) -> None:
    for sid in sample_ids:
        predict_sample(ws.db, ws.blobs, serving, sid, ws.settings.learning, 3, "app")


def test_measure_drift_end_to_end(settings: Settings) -> None:
    drift = DriftSettings(recent=60, reference=2000, min_recent=40, trigger_cycle=True)
    learning = settings.learning.model_copy(update=TINY)
    settings = settings.model_copy(update={"learning": learning, "drift": drift})
    ws = open_workspace(settings)
    ingest_digits(ws, n=300, labels_per_class=10)
    registry = ModelRegistry.from_settings(settings)
    assert measure_drift(ws, registry, drift) is None  # no champion yet
    run_cycle(ws, registry, learning)
    champion = registry.champion()
    serving = ServingModel(champion.version, tuple(str(c) for c in range(10)), registry.load())
    with ws.db.session() as s:
        pool = sorted(s.scalars(select(Sample.id).where(Sample.split == "pool")))
    _predict(ws, serving, pool[:30])
    assert measure_drift(ws, registry, drift) is None  # 30 recent inputs < min_recent

    # Normal traffic: more digits from the pool (never trained on: no labels).
    _predict(ws, serving, pool[30:60])
    calm = measure_drift(ws, registry, drift)
    assert calm is not None
    # The reference: the champion's training inputs (human and pseudo labels) not recent.
    with ws.db.session() as s:
        trained = set(s.scalars(select(Label.sample_id).where(is_current()))) - set(pool[:60])
        trained -= set(s.scalars(select(Sample.id).where(Sample.split == "test")))
    assert len(trained) >= 100  # the 100 seed labels and the first cycle's pseudo-labels
    assert (calm.recent, calm.reference, calm.model_version) == (
        60,
        len(trained),
        champion.version,
    )
    assert not calm.drifted and calm.p_value > 0.05
    assert calm.threshold == THRESHOLD and calm.computed_at.tzinfo is not None

    # The product starts sending inverted scans: the newest 60 inputs are all of them.
    images = load_digits().images[1000:1060]
    inverted = [
        store_input(ws.db, ws.blobs, _png(255 - np.round(im * 255 / 16)), ws.settings.ingest, "app")
        for im in images
    ]
    _predict(ws, serving, inverted)
    report, cycle_id = check_drift_and_trigger(ws, registry, settings)
    assert report is not None and report.drifted
    assert report.mmd > THRESHOLD and report.p_value < 0.05 and report.knn_ratio > 1.0
    assert report.mmd > 10 * max(calm.mmd, 0.0)
    assert cycle_id is not None
    with ws.db.session() as s:
        cycle = s.get(Cycle, cycle_id)
        assert (cycle.trigger, cycle.state) == ("drift", "queued")
    # That cycle holds the project's cycle lock: a second check queues nothing.
    again, none = check_drift_and_trigger(ws, registry, settings)
    assert again is not None and again.drifted and none is None
    quiet = settings.model_copy(update={"drift": drift.model_copy(update={"trigger_cycle": False})})
    assert check_drift_and_trigger(ws, registry, quiet)[1] is None
    ws.close()
