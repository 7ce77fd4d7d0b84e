"""Remote reads against real loopback endpoints: an S3-compatible server, a black hole and
a refusing port. Reads end by their own timeouts and say nothing about the remote."""

from __future__ import annotations

import pytest

from flywheel.config import IngestSettings
from flywheel.errors import BusyError, NotFoundError
from flywheel.store.remote_reads import ReadFailed, RemoteReader
from flywheel.store.remote_sources import RemoteSourcePolicy
from tests.endpoints import S3Server, black_hole, refusing_port

pytestmark = pytest.mark.integration


def _root(port: int) -> str:
    return f"s3://bkt/imgs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"


def _reader(root: str, **settings: object) -> tuple[RemoteSourcePolicy, RemoteReader]:
    ingest = IngestSettings(uri_roots=[root], **settings)  # type: ignore[arg-type]
    return RemoteSourcePolicy(ingest.uri_roots, ingest.uri_schemes), RemoteReader(ingest)


def test_reads_objects_under_a_root(s3: S3Server) -> None:
    s3.put("bkt", "imgs/a.png", b"\x89PNG bytes")
    s3.put("bkt", "imgs/big.png", b"x" * 2000)
    policy, reader = _reader(s3.root("bkt", "imgs"), max_image_bytes=1000)
    assert reader.read(policy.check("s3://bkt/imgs/a.png")) == b"\x89PNG bytes"
    with pytest.raises(NotFoundError, match=r"^not found$"):
        reader.read(policy.check("s3://bkt/imgs/missing.png"))
    with pytest.raises(ReadFailed, match="over the 1000-byte limit"):  # refused before GET
        reader.read(policy.check("s3://bkt/imgs/big.png"))
    (future,) = reader.submit([policy.check("s3://bkt/imgs/a.png")])
    assert future.result(timeout=60) == b"\x89PNG bytes"
    reader.close()


def test_black_hole_and_refusing_endpoints_fail_fast_and_quietly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with black_hole() as hole:
        for port, reason in ((hole.port, "timed out"), (refusing_port(), "could not be read")):
            policy, reader = _reader(
                _root(port),
                remote_connect_timeout_s=1,
                remote_read_timeout_s=1,
                remote_attempts=1,
                remote_total_timeout_s=30,
            )
            with pytest.raises(ReadFailed) as err:
                reader.read(policy.check("s3://bkt/imgs/a.png"))
            # Nothing of the client's own error (host, port, curl codes) reaches the caller.
            assert str(err.value) == reason
        assert hole.connections >= 1


def test_a_full_queue_refuses_instead_of_growing() -> None:
    with black_hole() as hole:
        policy, reader = _reader(
            _root(hole.port),
            remote_threads=1,
            remote_queue=2,
            remote_connect_timeout_s=1,
            remote_read_timeout_s=60,  # both reads stay pending until the hole closes
            remote_attempts=1,
            remote_total_timeout_s=120,
        )
        obj = policy.check("s3://bkt/imgs/a.png")
        first = reader.submit([obj, obj])
        assert reader.pending == 2
        with pytest.raises(BusyError):
            reader.submit([obj])
    # The endpoint is gone: the reads fail at once, and the queue is empty again.
    for f in first:
        with pytest.raises(ReadFailed):
            f.result(timeout=60)
    assert reader.pending == 0
    reader.close()


def test_a_dead_root_stalls_only_its_own_reads() -> None:
    import fsspec

    fsspec.filesystem("memory").pipe("/flywheel-lanes/ok.png", b"fine")
    with black_hole() as hole:
        ingest = IngestSettings(
            uri_roots=[_root(hole.port), "memory://flywheel-lanes"],
            remote_threads=1,
            remote_connect_timeout_s=1,
            remote_read_timeout_s=20,  # the black hole holds its root's one thread meanwhile
            remote_attempts=1,
        )
        policy = RemoteSourcePolicy(ingest.uri_roots, ingest.uri_schemes)
        reader = RemoteReader(ingest)
        stuck = reader.submit([policy.check("s3://bkt/imgs/a.png")] * 2)
        (ok,) = reader.submit([policy.check("memory://flywheel-lanes/ok.png")])
        assert ok.result(timeout=15) == b"fine"  # well before the black hole's read ends
        assert not any(f.done() for f in stuck)
        for f in stuck:
            f.cancel()
        reader.close()
