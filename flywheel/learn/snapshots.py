"""Each cycle's chosen embedding of every sample it saw, kept in the store as
``cycles/<id>/embeddings.npz``: what the label audit, the embedding map and drift read."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from flywheel.db import Cycle
from flywheel.errors import NotFoundError
from flywheel.learn.data import CycleData
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.store.blobs import SHA256_HEX_LEN
from flywheel.store.storage import read_bytes, write_atomic
from flywheel.workspace import Workspace


@dataclass(frozen=True)
class EmbeddingSnapshot:
    """A cycle's chosen embedding of every sample it saw (``cycles/<id>/embeddings.npz``)."""

    ids: np.ndarray  # str (n,): labeled, then pool, then test sample ids
    split: np.ndarray  # str (n,): "labeled" | "pool" | "test" (the cycle's view)
    vectors: np.ndarray  # float32 (n, d), unit rows
    name: str  # the embedding's name ("ssl" or "pca")
    cycle_id: int


EMBEDDINGS_ARTIFACT = "embeddings.npz"


def save_embeddings(ws: Workspace, cycle_id: int, choice: EmbeddingChoice, data: CycleData) -> None:
    parts = (
        ("labeled", data.labeled.ids, choice.labeled),
        ("pool", data.pool_ids, choice.pool),
        ("test", data.test.ids, choice.test),
    )
    buf = io.BytesIO()
    # Ids as ASCII bytes (sha256 hex): numpy's str is 4 bytes a character, 256 MB for a
    # million ids, and the artifact is written at the select step's memory peak.
    np.savez(
        buf,
        ids=np.concatenate([np.array(ids, dtype=f"S{SHA256_HEX_LEN}") for _, ids, _ in parts]),
        split=np.concatenate([np.full(len(ids), name, dtype="S7") for name, ids, _ in parts]),
        vectors=np.concatenate([v for _, _, v in parts]).astype(np.float32, copy=False),
        name=np.array(choice.name),
    )
    fs, path = ws.cycle_file(cycle_id, EMBEDDINGS_ARTIFACT)
    write_atomic(fs, path, buf.getbuffer())  # a retried step writes the same rows again


def load_embeddings(ws: Workspace, cycle_id: int) -> EmbeddingSnapshot | None:
    """The embeddings cycle ``cycle_id`` selected with; None if its select step never ran."""
    fs, path = ws.cycle_file(cycle_id, EMBEDDINGS_ARTIFACT)
    try:
        raw = read_bytes(fs, path)
    except NotFoundError:
        return None
    with np.load(io.BytesIO(raw)) as f:
        vectors = f["vectors"].astype(np.float32, copy=False)
        ids, split = f["ids"].astype(str), f["split"].astype(str)  # stored as bytes
        return EmbeddingSnapshot(ids, split, vectors, str(f["name"]), cycle_id)


def latest_embeddings(ws: Workspace) -> EmbeddingSnapshot | None:
    """The newest cycle's embeddings artifact (cycles that never selected are skipped)."""
    with ws.db.session() as s:
        ids = s.scalars(select(Cycle.id).order_by(Cycle.id.desc())).all()
    for cycle_id in ids:
        snapshot = load_embeddings(ws, cycle_id)
        if snapshot is not None:
            return snapshot
    return None
