"""Embeddings kept under the storage root, keyed by (sample id, embedding fingerprint).

Layout: ``<root>/embeddings/<fingerprint>/<shard>.parquet``, two columns: ``sample_id``
(string) and ``vector`` (fixed-size list of float32). A shard is named by the ids it holds,
so writing it again writes the same name, and ``storage.write_once`` keeps the first copy:
a retried or duplicated shard task changes nothing. A cycle asks ``ensure`` for its ids and
computes only those no shard holds yet; a pool that grows by 1 % costs 1 % of an embedding.

Shards are the unit of work and of reading: nothing here holds more than the requested rows
plus one shard at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from flywheel.datasets.fingerprint import fingerprint
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.store import storage
from flywheel.store.id_index import IdIndex

STORE_FOLDER = "embeddings"
SHARD_FORMAT = 1  # bump when the shard layout changes: old shards are then not read
DEFAULT_SHARD_SIZE = 4096  # rows per shard written by ``ensure``
_HEX = frozenset("0123456789abcdef")


def shard_name(ids: Sequence[str]) -> str:
    """A shard's file name: a digest of the ids it holds, in order."""
    return fingerprint("embedding-shard", SHARD_FORMAT, *ids, length=32) + ".parquet"


def _shard_bytes(ids: Sequence[str], vectors: np.ndarray) -> bytes:
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    table = pa.table(
        {
            "sample_id": pa.array(list(ids), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class EmbeddingStore:
    """Write-once embedding shards under a storage root (local path or any fsspec URI)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._loc = storage.open_location(root)

    def _folder(self, fp: str) -> str:
        if not fp or len(fp) > 64 or not _HEX.issuperset(fp):
            raise InvalidInputError(f"not an embedding fingerprint: {fp!r}")
        return self._loc.path(STORE_FOLDER, fp)

    def shards(self, fp: str) -> list[str]:
        """Paths of ``fp``'s published shards, in name order (temp files are skipped)."""
        selector = pafs.FileSelector(self._folder(fp), allow_not_found=True)
        infos = self._loc.fs.get_file_info(selector)
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        )

    def _read(self, path: str, columns: list[str]) -> pa.Table:
        return pq.read_table(io.BytesIO(storage.read_bytes(self._loc.fs, path)), columns=columns)

    def known_ids(self, fp: str, among: Sequence[str] | None = None) -> set[str]:
        """Every sample id with a vector for ``fp`` (reads the id column only); with
        ``among``, only those of these ids (matched by ``IdIndex``: a pool of a million
        stored ids is not kept as Python strings to find a few)."""
        wanted = None if among is None else IdIndex(among)
        known: set[str] = set()
        for path in self.shards(fp):
            ids = self._read(path, ["sample_id"]).column(0)
            if wanted is not None:
                ids = ids.filter(pa.array(wanted.contains(ids)))
            known.update(ids.to_pylist())
        return known

    def holds(self, fp: str, ids: Sequence[str]) -> bool:
        """Whether the shard of exactly ``ids`` (what ``put(fp, ids, ...)`` writes) exists:
        a shard task's check that it already ran, without reading any other shard."""
        return bool(ids) and storage.exists(self._loc.fs, f"{self._folder(fp)}/{shard_name(ids)}")

    def put(self, fp: str, ids: Sequence[str], vectors: np.ndarray) -> bool:
        """Write one shard of ``ids`` -> ``vectors`` (float (n, d)); False if it existed."""
        if vectors.ndim != 2 or len(ids) != len(vectors) or not len(ids):
            raise InvalidInputError(
                f"a shard needs one vector per id: {len(ids)} ids, shape {vectors.shape}"
            )
        path = f"{self._folder(fp)}/{shard_name(ids)}"
        return storage.write_once(self._loc.fs, path, _shard_bytes(ids, vectors))

    def iter_shards(self, fp: str) -> Iterator[tuple[pa.ChunkedArray, np.ndarray]]:
        """(Arrow string ids, float32 (n, d) vectors) of each shard in turn: one shard in
        memory at a time."""
        for path in self.shards(fp):
            table = self._read(path, ["sample_id", "vector"])
            col = table.column("vector").combine_chunks()
            dim = col.type.list_size
            vectors = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
            yield table.column("sample_id"), vectors.astype(np.float32, copy=False)

    def rows(self, fp: str, ids: Sequence[str]) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """(ids, vectors) of ``ids``, shard by shard in the store's order, each sample once:
        for readers that stream (the embeddings artifact) and need no pool-sized output.
        Raises NotFoundError, after the last shard, if any of ``ids`` has no vector."""
        wanted = IdIndex(ids)
        seen = np.zeros(len(ids), dtype=bool)
        for shard_ids, vectors in self.iter_shards(fp):
            at = wanted.find(shard_ids)
            rows = np.flatnonzero(at >= 0)
            rows = rows[~seen[at[rows]]]  # a sample in two shards: its first copy
            rows = rows[np.unique(at[rows], return_index=True)[1]]
            seen[at[rows]] = True
            if len(rows):
                yield shard_ids.take(pa.array(rows)).combine_chunks(), vectors[rows]
        self._all_found(fp, ids, seen, wanted)

    @staticmethod
    def _all_found(fp: str, ids: Sequence[str], found: np.ndarray, index: IdIndex) -> None:
        """Raise unless every id was found. A repeated id is found once: checked only
        here, so that a read that succeeds pays nothing for the check."""
        if not found.all():
            twice = index.duplicates()
            if twice:
                raise InvalidInputError(f"ids must be distinct: {twice} repeat")
            missing = [ids[i] for i in np.flatnonzero(~found)[:3]]
            raise NotFoundError(
                f"{int((~found).sum())} of {len(ids)} samples have no {fp} embedding, "
                f"e.g. {missing}"
            )

    def get(self, fp: str, ids: Sequence[str]) -> np.ndarray:
        """float32 (len(ids), d) for ``ids``, in order; NotFoundError names what is missing.

        A sample in two shards (two cycles embedded it before either published) has the
        same vector in both: the model and the bytes fix it, so either copy will do. Ids are
        matched by ``IdIndex`` (sorted bytes), not a pool-sized dict or hash table."""
        return self.get_parts(fp, [ids])[0]

    def get_parts(self, fp: str, parts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """``get`` for each list of ``parts`` (labeled, pool, test), in one pass over the
        shards. Each part is matched on its own: joined, a pool's ids would be copied twice
        more (the join, then its sorted copy), and a pool in id order needs no sorted copy."""
        wanted = [IdIndex(ids) for ids in parts]
        filled = [np.zeros(len(ids), dtype=bool) for ids in parts]
        out: list[np.ndarray] | None = None
        for shard_ids, vectors in self.iter_shards(fp):
            if out is None:
                out = [np.empty((len(ids), vectors.shape[1]), np.float32) for ids in parts]
            for index, into, done in zip(wanted, out, filled, strict=True):
                dst = index.find(shard_ids)
                src = np.flatnonzero(dst >= 0)
                into[dst[src]] = vectors[src]
                done[dst[src]] = True
        for ids, done, index in zip(parts, filled, wanted, strict=True):
            self._all_found(fp, ids, done, index)
        if out is None:
            raise NotFoundError(f"the store holds no {fp} embeddings")
        return out

    def ensure(
        self,
        fp: str,
        ids: Sequence[str],
        compute: Callable[[list[str]], np.ndarray],
        shard_size: int = DEFAULT_SHARD_SIZE,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """``get(fp, ids)``, computing and storing first what no shard holds yet.

        ``compute`` embeds a list of ids (at most ``shard_size``) to float (n, d);
        ``progress(done, todo)`` is called after each shard written."""
        if shard_size < 1:
            raise InvalidInputError(f"shard_size must be >= 1, got {shard_size}")
        known = self.known_ids(fp, ids)
        missing = sorted({sid for sid in ids if sid not in known})  # sorted: stable shards
        for start in range(0, len(missing), shard_size):
            chunk = missing[start : start + shard_size]
            self.put(fp, chunk, np.asarray(compute(chunk)))
            if progress is not None:
                progress(min(start + shard_size, len(missing)), len(missing))
        return self.get(fp, ids) if ids else np.zeros((0, 0), dtype=np.float32)
