"""Transactional outbox: messages committed together with the rows they are about.

A producer calls :func:`enqueue` with the SQLAlchemy session it is already writing its own
rows in, so the message and those rows commit (or roll back) together. Today the one
producer is a cycle request (:mod:`flywheel.cycle.requests`): a queued cycle implies its
message is committed, and no message ever announces a cycle that does not exist. Feedback
is not enqueued: it is committed to the database, where the next cycle's consensus reads
it. A relay (the API, beat, the CLI) calls :func:`relay` to hand due messages to the broker.

Delivery is **at-least-once**. A relay that crashes (or whose commit fails) after
``publish`` returned but before ``sent_at`` was committed publishes those messages again on
its next run, so consumers must be idempotent (e.g. keyed on the payload's ids).

Concurrency: on PostgreSQL the relay claims rows with ``SELECT ... FOR UPDATE SKIP LOCKED``,
so several relays can run side by side and never publish the same row concurrently. On
SQLite, which has one writer at a time, the relay takes the write lock before it reads, so
concurrent relays run one after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from flywheel.db.models import OutboxMessage, aware_utc, utcnow
from flywheel.db.session import Database

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_ERROR_CHARS = 2000

# Hands one message (topic, payload) to the broker; raises while it is unreachable.
Publish = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class RelayReport:
    """What one :func:`relay` call did: messages published, and publishes that raised."""

    sent: int
    failed: int


def backoff_s(attempts: int) -> float:
    """Seconds to wait before the next try after ``attempts`` failed ones (1 s, 2 s, 4 s ...).

    Capped at ``BACKOFF_MAX_S`` so a broker outage of hours is retried every 5 minutes.
    """
    if attempts <= 0:
        return 0.0
    # min() on the exponent first: 2 ** 10_000 as a float would overflow.
    return min(BACKOFF_BASE_S * 2 ** min(attempts - 1, 32), BACKOFF_MAX_S)


def enqueue(
    session: Session,
    topic: str,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
) -> int | None:
    """Add a message to the outbox within the caller's open transaction; do not commit.

    Returns the new message's id, or ``None`` when a message with the same ``dedupe_key``
    already exists (committed, or written earlier in this transaction): the same logical
    message is enqueued once however often its producer retries. Messages without a
    ``dedupe_key`` are never deduplicated. ``payload`` must be JSON-serializable.

    Duplicates are found first with a query in this session; against a concurrent
    transaction inserting the same key, the unique constraint decides (``ON CONFLICT DO
    NOTHING``, so the loser's transaction is not aborted and it just gets ``None``).
    """
    if not topic:
        raise ValueError("an outbox message needs a topic")
    if dedupe_key is not None:
        # Autoflush makes an earlier, still pending enqueue in this session visible here.
        existing = session.scalar(
            select(OutboxMessage.id).where(OutboxMessage.dedupe_key == dedupe_key)
        )
        if existing is not None:
            return None
    now = utcnow()
    values = {
        "topic": topic,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "created_at": now,
        "available_at": now,
        "attempts": 0,
    }
    dialect = session.get_bind().dialect.name
    if dedupe_key is not None and dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = (
            insert(OutboxMessage)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[OutboxMessage.dedupe_key])
            .returning(OutboxMessage.id)
        )
        return session.execute(stmt).scalar_one_or_none()
    message = OutboxMessage(**values)
    session.add(message)
    session.flush()  # assigns the id; a racing duplicate key raises IntegrityError here
    return message.id


def relay(
    db: Database,
    publish: Publish,
    batch_size: int = 100,
    now: datetime | None = None,
) -> RelayReport:
    """Publish up to ``batch_size`` due, unsent messages, oldest first, in one transaction.

    For each claimed message ``publish(topic, payload)`` is called; when it returns the
    message gets ``sent_at``; when it raises, the message gets ``attempts + 1``,
    ``last_error`` and ``available_at = now + backoff_s(attempts)`` (so it is not retried
    before then) and the relay goes on with the next message. A message is *due* when
    ``available_at <= now``; ``now`` defaults to the current time (pass it to control time
    in tests). Delivery is at-least-once: see the module docstring. Exceptions that are
    not ``Exception`` (KeyboardInterrupt) roll the whole batch back, to be published again.

    Claimed rows stay locked until the batch commits, so keep ``publish`` short (hand the
    message to the broker, do not wait for the consumer).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    now = aware_utc(now)
    sent = failed = 0
    with db.session() as session:
        # Two relays must not both read the same unsent rows.
        db.lock_for_write(session, "outbox")
        messages = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None), OutboxMessage.available_at <= now)
            .order_by(OutboxMessage.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        ).all()
        for message in messages:
            try:
                publish(message.topic, message.payload)
            except Exception as exc:  # any publish failure is retried later
                message.attempts += 1
                message.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                message.available_at = now + timedelta(seconds=backoff_s(message.attempts))
                failed += 1
            else:
                message.sent_at = now
                sent += 1
    return RelayReport(sent=sent, failed=failed)


def pending(db: Database) -> int:
    """How many messages are not sent yet (due or backing off): a gauge for metrics."""
    with db.session() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
            )
            or 0
        )
