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
from flywheel.store.blobs import SHA256_HEX_LEN
from flywheel.store.id_index import IdIndex, as_keys
from flywheel.store.storage import read_bytes, write_atomic
from flywheel.workspace import Workspace


def save_selection(
    ws: Workspace, cycle_id: int, data: CycleData, outcome: SelectionOutcome | None
) -> None:
    """The accepted pseudo-labels and the anchors' FAISS index. The ids are ASCII bytes
    and the labels class codes into ``classes``: a million accepted samples as numpy
    ``str`` ids and names would be 256 bytes and more a sample."""
    ids = np.zeros(0, dtype=f"S{SHA256_HEX_LEN}")
    codes = np.zeros(0, dtype=np.int32)
    scores = np.zeros(0, dtype=np.float32)
    if outcome is not None:
        accepted = outcome.result.decision == Decision.ACCEPTED
        rows = np.flatnonzero(accepted)
        ids = as_keys(data.pool_ids)[rows].astype(f"S{SHA256_HEX_LEN}", copy=False)
        codes = outcome.result.label[accepted].astype(np.int32)
        scores = outcome.result.score[accepted].astype(np.float32)
        if outcome.index is not None:
            fs, path = ws.cycle_file(cycle_id, "anchors.faiss")
            write_atomic(fs, path, faiss.serialize_index(outcome.index).tobytes())
    buf = io.BytesIO()
    classes = np.array(data.classes, dtype=str)
    np.savez(buf, ids=ids, codes=codes, classes=classes, scores=scores)
    fs, path = ws.cycle_file(cycle_id, "selection.npz")
    # Overwritten, not write-once: a retry after a crash before the labels committed wrote
    # this file for a selection that never counted; the committed one is the last written.
    write_atomic(fs, path, buf.getvalue())


def load_selection(
    ws: Workspace, cycle_id: int, data: CycleData
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``save_selection``'s labels aligned to ``data.pool_ids``: accepted mask, class, score."""
    fs, path = ws.cycle_file(cycle_id, "selection.npz")
    with np.load(io.BytesIO(read_bytes(fs, path))) as saved:
        ids, scores = saved["ids"], saved["scores"]
        if "codes" in saved:
            codes, names = saved["codes"], [str(c) for c in saved["classes"]]
        else:  # written before class codes: one class name per accepted sample
            names_of, codes = np.unique(saved["labels"], return_inverse=True)
            names = [str(c) for c in names_of]
    index = {c: i for i, c in enumerate(data.classes)}
    to_class = np.array([index[name] for name in names], dtype=np.int64)
    # A sample labeled by a person since the selection left the pool: it trains as labeled.
    at = IdIndex(ids).find(data.pool_ids)
    accepted = at >= 0
    picked = at[accepted]
    return accepted, to_class[codes[picked]], scores[picked].astype(np.float32)


def load_anchor_index(ws: Workspace, cycle_id: int) -> faiss.Index | None:
    fs, path = ws.cycle_file(cycle_id, "anchors.faiss")
    try:
        raw = read_bytes(fs, path)
    except NotFoundError:
        return None
    return faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
