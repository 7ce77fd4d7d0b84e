import numpy as np
import pyarrow.parquet as pq
import pytest

from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.learn.embedding_store import EmbeddingStore, shard_name
from flywheel.store.id_index import SampleIds

FP = "ab" * 12


def vectors_for(ids: list[str]) -> np.ndarray:
    """A vector that can be told from its id alone: [n, n + 0.5] for id "s<n>"."""
    n = np.array([float(i[1:]) for i in ids], dtype=np.float32)
    return np.stack([n, n + 0.5], axis=1)


class Counting:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, ids: list[str]) -> np.ndarray:
        self.calls.append(list(ids))
        return vectors_for(ids)


@pytest.mark.parametrize("root", ["local", "memory://emb-store-test"])
def test_ensure_computes_only_what_is_missing_in_shards_and_returns_rows_in_order(tmp_path, root):
    store = EmbeddingStore(str(tmp_path) if root == "local" else root)
    compute = Counting()
    first = [f"s{i}" for i in (5, 1, 3, 2, 4)]
    got = store.ensure(FP, first, compute, shard_size=2)
    np.testing.assert_array_equal(got, vectors_for(first))
    # missing ids are embedded sorted, two per shard: three shards
    assert compute.calls == [["s1", "s2"], ["s3", "s4"], ["s5"]]
    assert len(store.shards(FP)) == 3

    grown = [*first, "s7", "s6"]
    got = store.ensure(FP, grown, compute, shard_size=2)
    np.testing.assert_array_equal(got, vectors_for(grown))
    assert compute.calls[3:] == [["s6", "s7"]]  # only the new samples
    assert store.known_ids(FP) == set(grown)
    assert store.known_ids(FP, among=["s7", "s9", "s1"]) == {"s7", "s1"}
    assert store.known_ids(FP, among=[]) == set()


def test_a_shard_is_named_by_its_ids_and_written_once(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    ids = ["s1", "s2"]
    assert store.put(FP, ids, vectors_for(ids)) is True
    # a retried shard task: same ids, same name, the first copy stays
    assert store.put(FP, ids, vectors_for(ids) + 100) is False
    (path,) = store.shards(FP)
    assert path.endswith(shard_name(ids))
    np.testing.assert_array_equal(store.get(FP, ids), vectors_for(ids))
    table = pq.read_table(path)  # plain Parquet: readable without flywheel
    assert table.column("sample_id").to_pylist() == ids
    assert table.column("vector").to_pylist() == [[1.0, 1.5], [2.0, 2.5]]


def test_fingerprints_are_kept_apart_and_missing_rows_are_named(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    store.put(FP, ["s1"], vectors_for(["s1"]))
    with pytest.raises(NotFoundError, match=r"1 of 2 samples .* e.g. \[.s9.\]"):
        store.get(FP, ["s1", "s9"])
    with pytest.raises(NotFoundError):
        store.get("cd" * 12, ["s1"])
    assert store.known_ids("cd" * 12) == set()
    with pytest.raises(InvalidInputError, match="distinct"):
        store.get(FP, ["s1", "s1"])


def test_parts_are_read_in_one_pass_each_in_its_order(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    store.put(FP, ["s1", "s2"], vectors_for(["s1", "s2"]))
    store.put(FP, ["s3", "s4"], vectors_for(["s3", "s4"]))
    parts = [["s4", "s1"], SampleIds(["s2", "s3"]), []]
    got = store.get_parts(FP, parts)
    assert [g.shape for g in got] == [(2, 2), (2, 2), (0, 2)]
    for ids, vectors in zip(parts, got, strict=True):
        np.testing.assert_array_equal(vectors, vectors_for(list(ids)).reshape(-1, 2))
    with pytest.raises(NotFoundError, match="s9"):
        store.get_parts(FP, [["s1"], ["s9"]])


def test_a_sample_in_two_shards_is_read_once(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    store.put(FP, ["s1", "s2"], vectors_for(["s1", "s2"]))
    store.put(FP, ["s2", "s3"], vectors_for(["s2", "s3"]))
    np.testing.assert_array_equal(
        store.get(FP, ["s3", "s2", "s1"]), vectors_for(["s3", "s2", "s1"])
    )


@pytest.mark.parametrize("fp", ["", "../etc", "AB" * 12, "g" * 24, "a" * 65])
def test_a_fingerprint_that_is_no_hex_key_is_refused(tmp_path, fp):
    with pytest.raises(InvalidInputError, match="fingerprint"):
        EmbeddingStore(str(tmp_path)).shards(fp)


def test_bad_shards_are_refused(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    with pytest.raises(InvalidInputError, match="one vector per id"):
        store.put(FP, ["s1", "s2"], vectors_for(["s1"]))
    with pytest.raises(InvalidInputError, match="one vector per id"):
        store.put(FP, [], np.zeros((0, 2), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="shard_size"):
        store.ensure(FP, ["s1"], vectors_for, shard_size=0)


def test_rows_stream_each_asked_sample_once_shard_by_shard(tmp_path):
    store = EmbeddingStore(str(tmp_path))
    store.put(FP, ["s1", "s2", "s3"], vectors_for(["s1", "s2", "s3"]))
    store.put(FP, ["s3", "s4"], vectors_for(["s3", "s4"]))
    store.put(FP, ["s5"], vectors_for(["s5"]))
    wanted = ["s4", "s3", "s1", "s5"]
    blocks = list(store.rows(FP, wanted))
    assert len(blocks) <= len(store.shards(FP))
    ids = [sid for block, _ in blocks for sid in block.to_pylist()]
    assert sorted(ids) == sorted(wanted)  # s3 is in two shards: streamed once
    for block, vectors in blocks:
        np.testing.assert_array_equal(vectors, vectors_for(block.to_pylist()))
    with pytest.raises(NotFoundError, match=r"1 of 2 samples .* e.g. \[.s9.\]"):
        list(store.rows(FP, ["s1", "s9"]))
    with pytest.raises(InvalidInputError, match="distinct"):
        list(store.rows(FP, ["s1", "s1"]))
