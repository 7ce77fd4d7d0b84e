import pickle
import uuid
from pathlib import Path

import pytest

from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError
from flywheel.store.blobs import BlobStore, sha256_hex


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return BlobStore(str(tmp_path / "store"))
    # A second filesystem implementation through fsspec (what s3:// etc. go through).
    return BlobStore(f"memory://flywheel-{uuid.uuid4().hex}")


def test_put_get_round_trip_and_content_address(store: BlobStore) -> None:
    data = b"\x89PNG fake bytes"
    blob = store.put(data)
    assert blob.sha256 == sha256_hex(data)
    assert blob.created
    assert store.get(blob.sha256) == data
    assert store.exists(blob.sha256)
    assert blob.uri.endswith(f"/blobs/{blob.sha256[:2]}/{blob.sha256[2:4]}/{blob.sha256}")


def test_same_bytes_are_stored_once(store: BlobStore) -> None:
    first = store.put(b"abc")
    second = store.put(b"abc")
    assert first.sha256 == second.sha256
    assert first.created and not second.created


def test_missing_and_malformed_keys(store: BlobStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("0" * 64)
    with pytest.raises(InvalidInputError):
        store.get("../../etc/passwd")


def test_delete_undoes_a_write(store: BlobStore) -> None:
    blob = store.put(b"temporary")
    store.delete(blob.sha256)
    assert not store.exists(blob.sha256)


def test_pickles_by_root(store: BlobStore) -> None:
    blob = store.put(b"for a worker process")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.root == store.root
    if store.root.startswith("memory://"):
        return  # memory:// is per-process; the local store is what workers share
    assert clone.get(blob.sha256) == b"for a worker process"


def test_tampered_blob_is_refused(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "store"))
    blob = store.put(b"original")
    Path(blob.uri.removeprefix("file://")).write_bytes(b"tampered")
    with pytest.raises(IntegrityError):
        store.get(blob.sha256)
    assert store.get(blob.sha256, verify=False) == b"tampered"


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="unsupported storage URI"):
        BlobStore("nosuchscheme://bucket")


def test_put_many_keeps_order_and_dedups(store: BlobStore) -> None:
    items = [b"one", b"two", b"one", b"three"]
    blobs = store.put_many(items)
    assert [b.sha256 for b in blobs] == [sha256_hex(d) for d in items]
    assert sum(b.created for b in blobs) in (3, 4)  # the two b"one" writes may race
    assert all(store.get(b.sha256) == d for b, d in zip(blobs, items, strict=True))


def test_put_many_is_all_or_nothing(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "store"))
    good = b"fine"
    bad = b"this one cannot be written"
    # A real failure: a *file* squats on the folder the bad blob needs.
    sha = sha256_hex(bad)
    blocker = tmp_path / "store" / "blobs" / sha[:2] / sha[2:4]
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        store.put_many([good, bad])
    assert not store.exists(sha256_hex(good))
