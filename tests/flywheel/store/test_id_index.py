import numpy as np
import pyarrow as pa

from flywheel.store.id_index import IdIndex, SampleIds, as_keys


def test_ids_are_found_at_their_positions_in_the_list() -> None:
    index = IdIndex(["c", "a", "e", "a"])
    assert len(index) == 4
    found = index.find(["a", "b", "e", "f", "", "c"])
    assert found.tolist() == [1, -1, 2, -1, -1, 0]  # "a" twice: its first position
    assert index.contains(pa.array(["e", "z"])).tolist() == [True, False]
    assert index.contains(np.array([b"c"])).tolist() == [True]
    assert index.duplicates() == ["a"]


def test_an_empty_list_or_query_finds_nothing() -> None:
    assert IdIndex([]).find(["a"]).tolist() == [-1]
    assert IdIndex(["a"]).find([]).tolist() == []
    assert IdIndex(pa.chunked_array([["b", "a"]])).find(["a"]).tolist() == [1]
    assert IdIndex(["a", "b"]).duplicates() == []


def test_sample_ids_read_as_the_list_of_strings_they_hold() -> None:
    ids = SampleIds(["c", "ab", "e"])
    assert ids.keys.dtype.kind == "S"
    assert len(ids) == 3 and ids[0] == "c" and ids[-1] == "e"
    assert list(ids) == ["c", "ab", "e"] and ids == ["c", "ab", "e"]
    assert ids[1:] == ["ab", "e"] and isinstance(ids[1:], SampleIds)
    assert ids[np.array([2, 0])] == ["e", "c"]
    assert ids[np.array([True, False, True])] == ["c", "e"]
    # a list joined with the pool's ids, as the SSL key does: still bytes
    assert ["x"] + ids == ["x", "c", "ab", "e"]  # noqa: RUF005
    assert ids + ["x"] == ["c", "ab", "e", "x"]  # noqa: RUF005
    assert isinstance(["x"] + ids, SampleIds)  # noqa: RUF005
    assert ids.lines() == b"c\nab\ne"
    assert SampleIds(iter(["a"])) == ["a"] and SampleIds() == [] and ids != ["c"]


def test_an_index_over_sample_ids_leaves_them_in_their_order() -> None:
    ids = SampleIds(["c", "a", "b"])
    assert IdIndex(ids).find(["a", "b", "c"]).tolist() == [1, 2, 0]
    assert ids == ["c", "a", "b"]  # sorted as a copy, not in place
    assert as_keys(ids) is ids.keys


def test_ids_already_in_order_are_searched_as_they_are():
    keys = np.array([b"a", b"b", b"b", b"d"])
    index = IdIndex(keys)
    assert index._sorted is keys and index._order is None  # no sorted copy, no order
    assert index.find(["b", "d", "c", "a"]).tolist() == [1, 3, -1, 0]  # "b": its first
    assert index.duplicates() == ["b"]
    pool = SampleIds(["a", "c"])  # a scanned pool, in id order
    assert IdIndex(pool)._sorted is pool.keys
