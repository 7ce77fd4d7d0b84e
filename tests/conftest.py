"""Shared fixtures: real SQLite files and a real PostgreSQL schema per test, tmp stores."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

# pytest-xdist gives its workers COLUMNS=80. The CLI's rich console reads COLUMNS once, when
# it is created at import, and would then keep 80 whatever width a test's runner asks for.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
from PIL import Image
from sqlalchemy import create_engine, text

from flywheel.config import Settings
from flywheel.db import Sample
from flywheel.workspace import Workspace, open_workspace
from tests.endpoints import S3_ENV, S3Server, s3_server

# The PostgreSQL server on loopback (trust auth). Each test gets its own schema in it.
PG_URL = os.environ.get("FLYWHEEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration]),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flywheel.db'}"
        return
    with postgres_schema_url() as url:
        yield url


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A URL into a fresh schema of the shared PostgreSQL, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database={"url": db_url})


@pytest.fixture
def workspace(settings: Settings) -> Iterator[Workspace]:
    ws = open_workspace(settings)
    yield ws
    ws.close()


def sample_row(n: int, split: str = "pool", source: str = "test") -> Sample:
    """A sample row for tests that need only its record (no blob behind it): id ``n`` as
    64 hex digits."""
    return Sample(
        id=f"{n:064x}",
        blob_uri="x",
        source=source,
        split=split,
        format="PNG",
        width=8,
        height=8,
        size_bytes=1,
    )


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    """Distinct small PNGs: ``make_png(seed, size=8, mode="L")``."""

    def make(seed: int, size: int = 8, mode: str = "L", fmt: str = "PNG") -> bytes:
        rng = np.random.default_rng(seed)
        shape = (size, size) if mode == "L" else (size, size, 3)
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        return buf.getvalue()

    return make


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A real S3-compatible server (moto) on loopback; the test process has its credentials."""
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    with s3_server() as server:
        yield server
