"""Each cycle's chosen embedding of every sample it saw, kept in the store as
``cycles/<id>/embeddings.npz``: what the label audit, the embedding map and drift read."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.lib.format as npformat
import pyarrow as pa
from numpy.typing import DTypeLike
from sqlalchemy import select

from flywheel.db import Cycle
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.data import CycleData
from flywheel.learn.embeddings import EmbeddingChoice
from flywheel.store.blobs import SHA256_HEX_LEN
from flywheel.store.id_index import as_keys
from flywheel.store.storage import read_bytes, write_atomic_stream
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


# (ids, vectors) blocks of the pool, in any order: the artifact is then written as they come
PoolBlocks = Iterable[tuple[Sequence[str] | pa.Array, np.ndarray]]


def save_embeddings(
    ws: Workspace,
    cycle_id: int,
    choice: EmbeddingChoice,
    data: CycleData,
    pool: PoolBlocks | None = None,
) -> None:
    """Write the artifact; a retried step writes the same rows again. ``pool``: the pool's
    vectors as blocks (``EmbeddingStore.rows``) instead of ``choice.pool``, streamed into
    the file, so that a million-sample pool is never in memory at once."""
    blocks: PoolBlocks = [(data.pool_ids, choice.pool)] if pool is None else pool
    sizes = {
        "labeled": len(data.labeled.ids),
        "pool": len(data.pool_ids),
        "test": len(data.test.ids),
    }
    rows, dim = sum(sizes.values()), choice.labeled.shape[1]

    def parts() -> Iterator[tuple[str, Sequence[str] | pa.Array, np.ndarray]]:
        yield "labeled", data.labeled.ids, choice.labeled
        for ids, vectors in blocks:
            yield "pool", ids, vectors
        yield "test", data.test.ids, choice.test

    def write(f: BinaryIO) -> None:
        ids: list[np.ndarray] = []  # ASCII bytes (sha256 hex): numpy's str is 4 bytes a char
        counts = dict.fromkeys(sizes, 0)
        with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
            with _npy_member(zf, "vectors", np.float32, (rows, dim)) as out:
                for name, block_ids, vectors in parts():
                    if len(block_ids) != len(vectors):
                        raise InvalidInputError(
                            f"{len(block_ids)} {name} ids for {len(vectors)} vectors"
                        )
                    out.write(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim))
                    ids.append(_ascii(block_ids))
                    counts[name] += len(vectors)
            if counts != sizes:
                raise InvalidInputError(f"the embeddings artifact got {counts} rows")
            with _npy_member(zf, "ids", f"S{SHA256_HEX_LEN}", (rows,)) as out:
                for block in ids:
                    out.write(block)
            with _npy_member(zf, "split", "S7", (rows,)) as out:
                for name in sizes:
                    out.write(np.full(counts[name], name, dtype="S7"))
            with _npy_member(zf, "name", np.array(choice.name).dtype, ()) as out:
                out.write(np.array(choice.name))

    fs, path = ws.cycle_file(cycle_id, EMBEDDINGS_ARTIFACT)
    write_atomic_stream(fs, path, write)


def _ascii(ids: Sequence[str] | pa.Array) -> np.ndarray:
    return as_keys(ids).astype(f"S{SHA256_HEX_LEN}", copy=False)  # a pool's SampleIds: as is


@contextmanager
def _npy_member(
    zf: zipfile.ZipFile, name: str, dtype: DTypeLike, shape: tuple[int, ...]
) -> Iterator[_Rows]:
    """A ``name``.npy member of an npz (what ``np.load`` reads), written row block by row
    block; the caller writes exactly ``shape``'s rows of ``dtype``."""
    dtype = np.dtype(dtype)
    size = dtype.itemsize * int(np.prod(shape))
    header = {"descr": npformat.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with zf.open(f"{name}.npy", "w", force_zip64=size > ZIP64_FROM) as member:
        npformat.write_array_header_2_0(member, header)
        yield _Rows(member, dtype)


# zipfile refuses a member past ZIP64_LIMIT unless told up front: leave room for the header
ZIP64_FROM = zipfile.ZIP64_LIMIT - (1 << 16)


class _Rows:
    def __init__(self, member: BinaryIO, dtype: np.dtype) -> None:
        self.member, self.dtype = member, dtype

    def write(self, block: np.ndarray) -> None:
        rows = np.ascontiguousarray(block, dtype=self.dtype)
        if rows.size:  # a flat view of the rows: no bytes copy of a block
            self.member.write(rows.reshape(-1).view(np.uint8).data)


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
