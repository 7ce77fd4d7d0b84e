"""Engine and sessions; the schema is brought to the newest Alembic revision on open."""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from flywheel.errors import InvalidInputError

T = TypeVar("T")
IN_BATCH = 1000  # values per IN (...) list: SQLite bounds a statement's parameters


def in_batches(values: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    """``values`` in slices short enough for one ``IN (...)`` list each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; FKs are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def create_db_engine(url: str, echo: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInputError(f"not a database URL: {url!r}") from exc
    try:
        parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise InvalidInputError(f"unsupported database in URL {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade_to(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


class Database:
    """An engine plus a session factory; ``session()`` commits on success, rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @staticmethod
    def lock_for_write(session: Session, table: str) -> None:
        """Serialize read-then-write sections on SQLite, where ``FOR UPDATE`` means nothing.

        A write statement that touches no row still takes SQLite's single write lock, so a
        second writer waits here (``busy_timeout``) instead of reading the same rows as the
        first. ``table`` is any table of ours with an ``id`` column. On PostgreSQL this does
        nothing: its ``SELECT ... FOR UPDATE`` does the locking.
        """
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text(f"UPDATE {table} SET id = id WHERE 0 = 1"))

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Held by one process at a time per database: processes that start together (two
    workers on a fresh data dir) migrate one after the other, never both at once."""
    if engine.dialect.name == "postgresql":
        key = zlib.crc32(b"flywheel.migrations")  # one advisory-lock id for this purpose
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield  # nothing another process could share
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def open_database(url: str, auto_migrate: bool = True, echo: bool = False) -> Database:
    engine = create_db_engine(url, echo=echo)
    if auto_migrate and current_revision(engine) != head_revision():
        with migration_lock(engine):
            if current_revision(engine) != head_revision():  # another process may have
                upgrade(engine)
    return Database(engine)
