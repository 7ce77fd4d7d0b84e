import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from flywheel.db import Base
from flywheel.db.session import (
    create_db_engine,
    current_revision,
    downgrade_to,
    head_revision,
    open_database,
    upgrade,
)


def test_upgrade_from_empty_database_reaches_head(db_url: str) -> None:
    engine = create_db_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    engine.dispose()


def test_migrations_match_the_models(db_url: str) -> None:
    """A model change without a migration (or the reverse) fails here."""
    engine = create_db_engine(db_url)
    upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diffs == []


def test_downgrade_then_upgrade_in_place(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade(engine)
    downgrade_to(engine, "base")
    assert current_revision(engine) is None
    assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
    db = open_database(db_url)  # an older database is upgraded in place on open
    assert current_revision(db.engine) == head_revision()
    db.dispose()
    engine.dispose()


def test_open_without_auto_migrate_leaves_schema_alone(db_url: str) -> None:
    db = open_database(db_url, auto_migrate=False)
    assert current_revision(db.engine) is None
    db.dispose()


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x"])
def test_bad_database_url(url: str) -> None:
    from flywheel.errors import FlywheelError

    with pytest.raises(FlywheelError):
        create_db_engine(url)


def test_existing_data_survives_upgrade(db_url: str) -> None:
    """A database made by the first release keeps its rows through every later revision."""
    from sqlalchemy import text

    engine = create_db_engine(db_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO samples (id, blob_uri, source, split, format, width, height,"
                " size_bytes, created_at) VALUES ('s1', 'file:///x', 't', 'train', 'PNG', 8, 8,"
                " 10, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO labels (sample_id, label, source, confidence, method, created_at)"
                " VALUES ('s1', 'cat', 'seed', 1.0, 'm', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT label, retracted, evidence FROM labels")).one()
    assert (row.label, bool(row.retracted), row.evidence) == ("cat", False, None)
    engine.dispose()


def test_0006_gives_existing_samples_to_their_tenants(db_url: str) -> None:
    """Samples uploaded or predicted before tenants were recorded stay visible to them."""
    from sqlalchemy import text

    engine = create_db_engine(db_url)
    upgrade(engine, "0005")
    with engine.begin() as conn:
        for sid, source in (("s1", "upload:shop"), ("s2", "predict:kiosk"), ("s3", "digits")):
            conn.execute(
                text(
                    "INSERT INTO samples (id, blob_uri, source, split, format, width, height,"
                    " size_bytes, created_at) VALUES (:id, 'x', :source, 'pool', 'PNG', 8, 8,"
                    " 10, CURRENT_TIMESTAMP)"
                ),
                {"id": sid, "source": source},
            )
        conn.execute(
            text(
                "INSERT INTO predictions (id, sample_id, model_version, label, confidence,"
                " top_k, app_id, created_at) VALUES ('p1', 's3', '1', 'a', 0.9, '[]', 'shop',"
                " CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        rows = set(conn.execute(text("SELECT sample_id, tenant FROM sample_access")))
    assert rows == {("s1", "shop"), ("s2", "kiosk"), ("s3", "shop")}
    engine.dispose()


def _open_at_the_barrier(url: str, barrier, results) -> None:  # a spawned process
    barrier.wait()
    db = open_database(url)
    results.put(current_revision(db.engine))
    db.dispose()


def test_processes_starting_together_migrate_one_at_a_time(db_url: str) -> None:
    """Two workers started together on a fresh data dir: both open the database (one
    migrates, the other waits for it and finds the schema at head)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_open_at_the_barrier, args=(db_url, barrier, results)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(results.get(timeout=5) for _ in procs) == [head_revision()] * 3
