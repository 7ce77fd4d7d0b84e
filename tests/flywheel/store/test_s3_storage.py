"""The storage root on S3 for real: an S3-compatible server (moto) on loopback holds the
blobs, dataset versions and embedding store of a project that turns a whole cycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.db.models import CycleState
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.registry import ModelRegistry
from flywheel.store.blobs import BlobStore
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates, manifest_candidates
from flywheel.workspace import open_workspace
from tests.endpoints import S3_ENV, S3Server
from tests.flywheel.cycle.test_runner import TINY

pytestmark = pytest.mark.integration


def s3_fs(s3: S3Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(
        access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
        secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=s3.endpoint,
        scheme="http",
        region="us-east-1",
    )


def files_under(s3: S3Server, path: str) -> list[str]:
    infos = s3_fs(s3).get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def test_blobs_and_embeddings_on_s3(s3: S3Server) -> None:
    s3.put("blobs", "marker", b"")  # the bucket
    blobs = BlobStore(s3.root("blobs", "root"))
    stored = blobs.put_many([b"one", b"two"])
    assert [b.uri for b in stored] == [
        f"s3://blobs/root/blobs/{b.sha256[:2]}/{b.sha256[2:4]}/{b.sha256}" for b in stored
    ]
    got = blobs.get_many([stored[1].sha256, "0" * 64, stored[0].sha256])
    assert got[0] == b"two" and got[2] == b"one" and isinstance(got[1], Exception)

    store = EmbeddingStore(s3.root("blobs", "root"))
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    calls: list[list[str]] = []

    def compute(ids: list[str]) -> np.ndarray:
        calls.append(ids)
        return vectors[[int(i[1:]) for i in ids]]

    fp = "ab" * 12
    np.testing.assert_array_equal(
        store.ensure(fp, ["s2", "s0"], compute, shard_size=1), vectors[[2, 0]]
    )
    np.testing.assert_array_equal(store.ensure(fp, ["s0", "s1", "s2"], compute), vectors)
    assert calls == [["s0"], ["s2"], ["s1"]]
    assert len(files_under(s3, f"blobs/root/embeddings/{fp}")) == 3


def test_a_whole_cycle_with_its_storage_root_on_s3(s3: S3Server, tmp_path: Path) -> None:
    s3.put("project", "marker", b"")
    root = s3.root("project", "wheel")
    # 30 more samples live in another bucket and arrive by URI, from a manifest.
    digits = digits_candidates()
    for i, cand in enumerate(digits[120:150]):
        s3.put("photos", f"digits/{i}.png", cand.read())
    (tmp_path / "more.csv").write_text(
        "uri\n" + "".join(f"s3://photos/digits/{i}.png\n" for i in range(30))
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        storage={"root": root},
        ingest={"uri_roots": [s3.root("photos", "digits")]},
    )
    settings = settings.model_copy(update={"learning": settings.learning.model_copy(update=TINY)})
    ws = open_workspace(settings)
    plan = SplitPlan(labels_per_class=3, test_fraction=0.3, seed=0)
    report = ingest_candidates(ws.db, ws.blobs, digits[:120], "digits", settings.ingest, plan)
    assert report.added == 120
    more = manifest_candidates(tmp_path / "more.csv", settings.ingest)
    report = ingest_candidates(ws.db, ws.blobs, more, "manifest", settings.ingest)
    assert report.added == 30 and not report.rejected
    registry = ModelRegistry.from_settings(settings)
    result = run_cycle(ws, registry, settings.learning)
    assert result.state == CycleState.PROMOTED
    version, _ = ws.versions.snapshot("after cycle 1")

    assert len(files_under(s3, "project/wheel/blobs")) == 150
    shards = files_under(s3, "project/wheel/embeddings")
    assert shards and all(p.endswith(".parquet") for p in shards)
    manifests = files_under(s3, "project/wheel/versions")
    assert any(version.id in p for p in manifests)
    # written where the root says, and nowhere on local disk
    local = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and p.suffix == ".parquet"]
    assert local == []
    table = pq.read_table(shards[0], filesystem=s3_fs(s3))
    assert table.column_names == ["sample_id", "vector"]
    ws.close()
