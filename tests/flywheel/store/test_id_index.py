import numpy as np
import pyarrow as pa

from flywheel.store.id_index import IdIndex


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
