"""The embedding map: a PNG of the newest embeddings artifact, coloured by label or source."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from flywheel.cycle.state import start_cycle
from flywheel.db import Label
from flywheel.insights.embedding_map import (
    GREY,
    SOURCE_COLORS,
    _subsample,
    embedding_map_png,
    project,
)
from flywheel.learn.data import CycleData, LabeledSet
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.learn.sample_rows import PoolLabels
from flywheel.learn.snapshots import EmbeddingSnapshot, save_embeddings
from flywheel.workspace import Workspace
from tests.flywheel.insights.test_label_audit import embedded_digits


def _has_colour(png: Path, hex_colour: str, alpha: float, tol: int = 3) -> bool:
    """Whether some pixel shows ``hex_colour`` drawn at ``alpha`` over white (a dot centre)."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    seen = alpha * rgb + (1 - alpha) * 255
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=float)
    return bool((np.abs(pixels - seen).max(axis=-1) <= tol).any())


def test_no_map_without_embeddings(workspace, tmp_path) -> None:
    assert embedding_map_png(workspace, tmp_path / "map.png") is None
    assert not (tmp_path / "map.png").exists()


def test_map_by_label_and_by_source(workspace, tmp_path) -> None:
    data = embedded_digits(workspace, n=300, labels_per_class=5)
    with workspace.db.session() as s:  # a few pseudo-labels in the pool
        for sid in data.pool_ids[:40]:
            s.add(Label(sample_id=sid, label="3", source="pseudo", method="t"))
    by_label = embedding_map_png(workspace, tmp_path / "label.png")
    by_source = embedding_map_png(workspace, tmp_path / "source.png", color_by="source")
    assert by_label == tmp_path / "label.png" and by_source == tmp_path / "source.png"
    assert Image.open(by_label).format == "PNG" and Image.open(by_label).size[0] > 600
    # The unlabeled pool is light grey; class "0" is tab10's first colour.
    assert _has_colour(by_label, GREY, 0.55)
    assert _has_colour(by_label, "#1f77b4", 0.85)
    # By source: seed and pseudo labels each in their colour; there is no human label.
    assert _has_colour(by_source, SOURCE_COLORS["seed"], 0.85)
    assert _has_colour(by_source, SOURCE_COLORS["pseudo"], 0.85)
    assert not _has_colour(by_source, SOURCE_COLORS["human"], 0.85)


def _snapshot(n_pool: int, n_labeled: int = 50, n_test: int = 50) -> EmbeddingSnapshot:
    n = n_labeled + n_test + n_pool
    split = np.array(["labeled"] * n_labeled + ["test"] * n_test + ["pool"] * n_pool)
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    return EmbeddingSnapshot(np.array([f"{i:064x}" for i in range(n)]), split, vectors, "ssl", 1)


def test_subsample_keeps_labeled_and_test_rows_and_is_deterministic() -> None:
    snap = _snapshot(900)
    rows = _subsample(snap, 300, seed=0)
    assert len(rows) == 300 and len(set(rows.tolist())) == 300
    assert set(range(100)) <= set(rows.tolist())  # every labeled and test row is drawn
    np.testing.assert_array_equal(rows, _subsample(snap, 300, seed=0))
    assert not np.array_equal(rows, _subsample(snap, 300, seed=1))
    np.testing.assert_array_equal(_subsample(snap, 5000, seed=0), np.arange(1000))
    assert project(snap.vectors[:1]).shape == (1, 2)  # degenerate inputs still give 2-D


def _big_artifact(ws: Workspace, n_pool: int, dim: int = 64) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n_pool + 200, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:064x}" for i in range(n_pool + 200)]
    empty = np.zeros((0, 8, 8), np.uint8)
    data = CycleData(
        ["a", "b"],
        LabeledSet(ids[:100], empty, np.zeros(100, np.int64)),
        LabeledSet(ids[100:200], empty, np.zeros(100, np.int64)),
        ids[200:],
        empty,
        PoolLabels.of(ids[200:], {}, ["a", "b"]),
        np.zeros(0, np.int64),
    )
    choice = EmbeddingChoice("ssl", "x", vectors[:100], vectors[200:], vectors[100:200], {})
    save_embeddings(ws, start_cycle(ws, ws.settings.learning), choice, data)


def test_map_of_a_100k_pool_stays_fast(workspace, tmp_path) -> None:
    _big_artifact(workspace, 100_000)
    start = time.perf_counter()
    png = embedding_map_png(workspace, tmp_path / "big.png")
    elapsed = time.perf_counter() - start
    assert png is not None and png.stat().st_size > 10_000
    assert elapsed < 30  # measured: under 1 s on 2 cores (20,000 of 100,200 points drawn)
