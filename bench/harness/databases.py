"""Databases for benchmarks: a SQLite file in a scratch folder, or on the loopback
PostgreSQL (user postgres, trust) a fresh schema or a fresh database of the benchmark's
own, dropped afterwards; and counting a table's rows once a server is gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def postgres_up(url: str = PG_URL) -> bool:
    """Whether the PostgreSQL server at ``url`` answers (else a benchmark measures SQLite
    only)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:  # any failure to connect
        return False
    finally:
        engine.dispose()


@contextmanager
def postgres_schema(url: str = PG_URL, prefix: str = "bench") -> Iterator[str]:
    """A URL to a fresh, empty schema in ``url``'s database (as the search path), dropped
    with everything in it after the block."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def postgres_database(name: str, *, drop_only: bool = False, url: str = PG_URL) -> str:
    """(Re)create database ``name`` on ``url``'s server, empty (any earlier one with that
    name is dropped, its connections too); with ``drop_only``, just drop it. Its URL."""
    import psycopg

    admin = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{url.rsplit('/', 1)[0]}/{name}"


def count_rows(db_url: str, model: Any) -> int:
    """Rows of ``model``'s table (a ``flywheel.db`` model), without migrating anything."""
    from sqlalchemy import func, select

    from flywheel.db import open_database

    db = open_database(db_url, auto_migrate=False)
    try:
        with db.session() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        db.dispose()
