"""What a cycle's select step leaves for its train step in the store (``cycles/<id>/``):

- ``selection.npz``: the accepted pseudo-labels (ids, class names, scores), so the train
  step trains on exactly what the select step chose;
- ``anchors.faiss``: the labeled anchors' FAISS index, logged with the cycle's MLflow run.

The cycle's embeddings are kept beside them by :mod:`flywheel.learn.snapshots`.
"""

from __future__ import annotations

import io

import faiss
import numpy as np

from flywheel.errors import NotFoundError
from flywheel.learn.data import CycleData
from flywheel.select.outcome import SelectionOutcome
from flywheel.select.result import Decision
from flywheel.store.storage import read_bytes, write_atomic
from flywheel.workspace import Workspace


def save_selection(
    ws: Workspace, cycle_id: int, data: CycleData, outcome: SelectionOutcome | None
) -> None:
    """The accepted pseudo-labels (ids, class names, scores) and the anchors' FAISS index."""
    ids: list[str] = []
    names: list[str] = []
    scores = np.zeros(0, dtype=np.float32)
    if outcome is not None:
        accepted = outcome.result.decision == Decision.ACCEPTED
        ids = [sid for sid, a in zip(data.pool_ids, accepted, strict=True) if a]
        names = [data.classes[int(c)] for c in outcome.result.label[accepted]]
        scores = outcome.result.score[accepted].astype(np.float32)
        if outcome.index is not None:
            fs, path = ws.cycle_file(cycle_id, "anchors.faiss")
            write_atomic(fs, path, faiss.serialize_index(outcome.index).tobytes())
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids, dtype=str), labels=np.array(names, dtype=str), scores=scores)
    fs, path = ws.cycle_file(cycle_id, "selection.npz")
    # Overwritten, not write-once: a retry after a crash before the labels committed wrote
    # this file for a selection that never counted; the committed one is the last written.
    write_atomic(fs, path, buf.getvalue())


def load_selection(
    ws: Workspace, cycle_id: int, data: CycleData
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``save_selection``'s labels aligned to ``data.pool_ids``: accepted mask, class, score."""
    fs, path = ws.cycle_file(cycle_id, "selection.npz")
    saved = np.load(io.BytesIO(read_bytes(fs, path)))
    chosen = {
        str(sid): (str(name), float(score))
        for sid, name, score in zip(saved["ids"], saved["labels"], saved["scores"], strict=True)
    }
    index = {c: i for i, c in enumerate(data.classes)}
    # A sample labeled by a person since the selection left the pool: it trains as labeled.
    accepted = np.array([sid in chosen for sid in data.pool_ids], dtype=bool)
    picked = [chosen[sid] for sid, a in zip(data.pool_ids, accepted, strict=True) if a]
    labels = np.array([index[name] for name, _ in picked], dtype=np.int64)
    scores = np.array([score for _, score in picked], dtype=np.float32)
    return accepted, labels, scores


def load_anchor_index(ws: Workspace, cycle_id: int) -> faiss.Index | None:
    fs, path = ws.cycle_file(cycle_id, "anchors.faiss")
    try:
        raw = read_bytes(fs, path)
    except NotFoundError:
        return None
    return faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
