"""Which tenants may see a sample: grants where a tenant gets one, the check where it reads one.

A tenant gets a sample by uploading or registering it, or by predicting on an input file;
content addressing means two tenants sending the same bytes share one sample, each with its
own grant. Engineers see every sample. Any other caller is told the sample does not exist,
with the same error as an unknown id, so an id does not reveal that someone else holds it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from flywheel.db import Database, Sample, SampleAccess
from flywheel.db.models import utcnow
from flywheel.errors import NotFoundError
from flywheel.serve.api_keys import KeyInfo

# SQLite and PostgreSQL: the databases the service runs on.
_UPSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def grant(db: Database | Session, sample_ids: Iterable[str], tenant: str) -> None:
    """Let ``tenant`` see ``sample_ids`` (stored samples). Idempotent, and safe when another
    request grants the same pair at the same time.

    Given a session, the grants join its transaction; given a database, they commit here.
    """
    ids = sorted(set(sample_ids))  # sorted: concurrent grants lock rows in the same order
    if not ids:
        return
    if isinstance(db, Database):
        with db.session() as session:
            _grant(session, ids, tenant)
    else:
        _grant(db, ids, tenant)


def _grant(session: Session, ids: list[str], tenant: str) -> None:
    now = utcnow()
    rows = [{"sample_id": sid, "tenant": tenant, "created_at": now} for sid in ids]
    # Insert-if-absent in one statement: a racing grant of the same pair waits for the other
    # transaction and then skips the row, where a look-then-insert would fail on the key.
    insert = _UPSERT[session.get_bind().dialect.name]
    session.execute(insert(SampleAccess).values(rows).on_conflict_do_nothing())


def visible_to(key: KeyInfo) -> ColumnElement[bool]:
    """A filter on ``Sample`` rows: those ``key`` may see (every row, for an engineer)."""
    if key.is_engineer:
        return Sample.id.is_not(None)
    return exists().where(SampleAccess.sample_id == Sample.id, SampleAccess.tenant == key.tenant)


def visible_sample(db: Database, sample_id: str, key: KeyInfo) -> Sample:
    """The sample, if ``key`` may see it; otherwise the same NotFoundError as an unknown id."""
    with db.session() as session:
        row = session.scalar(select(Sample).where(Sample.id == sample_id, visible_to(key)))
    if row is None:
        raise NotFoundError(f"no sample {sample_id}")
    return row
