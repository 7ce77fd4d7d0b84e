import pickle
import uuid
from pathlib import Path

import pytest

from flywheel.blobstore import BlobStore, sha256_hex
from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError


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
