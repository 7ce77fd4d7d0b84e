from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from flywheel.cycle import outbox
from flywheel.db import Cycle, OutboxMessage
from flywheel.db.models import utcnow


class Recorder:
    """A publish callable that records what it was given and can be told to fail."""

    def __init__(self, fail_topics: set[str] | None = None, delay_s: float = 0.0) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail_topics = fail_topics or set()
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def __call__(self, topic: str, payload: dict) -> None:
        if topic in self.fail_topics:
            raise ConnectionError("broker down")
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append((topic, payload))


def test_enqueue_commits_with_the_callers_rows(workspace):
    with workspace.db.session() as s:
        s.add(Cycle())
        msg_id = outbox.enqueue(s, "cycle.start", {"cycle": 1})
    assert msg_id is not None
    assert outbox.pending(workspace.db) == 1
    with workspace.db.session() as s:
        msg = s.get(OutboxMessage, msg_id)
        assert msg.topic == "cycle.start" and msg.payload == {"cycle": 1}
        assert msg.attempts == 0 and msg.sent_at is None and msg.last_error is None


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(workspace):
    with pytest.raises(RuntimeError), workspace.db.session() as s:
        s.add(Cycle())
        outbox.enqueue(s, "cycle.start", {"cycle": 1}, dedupe_key="cycle:1")
        raise RuntimeError("the caller's own write failed")
    assert outbox.pending(workspace.db) == 0
    with workspace.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Cycle)) == 0
    # The key is free again: the rolled-back message does not block a retry.
    with workspace.db.session() as s:
        assert outbox.enqueue(s, "cycle.start", {"cycle": 1}, dedupe_key="cycle:1") is not None


def test_dedupe_key_enqueues_once(workspace):
    with workspace.db.session() as s:
        first = outbox.enqueue(s, "feedback", {"id": "f1"}, dedupe_key="feedback:f1")
        # Same transaction, not yet committed: still a duplicate.
        assert outbox.enqueue(s, "feedback", {"id": "f1"}, dedupe_key="feedback:f1") is None
    with workspace.db.session() as s:  # a later transaction (a retried request)
        assert outbox.enqueue(s, "feedback", {"id": "f1"}, dedupe_key="feedback:f1") is None
        # No key: never deduplicated.
        assert outbox.enqueue(s, "feedback", {"id": "f1"}) is not None
        assert outbox.enqueue(s, "feedback", {"id": "f1"}) is not None
    assert first is not None
    assert outbox.pending(workspace.db) == 3


def test_dedupe_survives_sent_messages(workspace):
    with workspace.db.session() as s:
        outbox.enqueue(s, "t", {}, dedupe_key="k")
    outbox.relay(workspace.db, Recorder())
    with workspace.db.session() as s:
        assert outbox.enqueue(s, "t", {}, dedupe_key="k") is None


def test_relay_sends_in_order_and_marks_sent(workspace):
    with workspace.db.session() as s:
        for i in range(5):
            outbox.enqueue(s, "t", {"i": i})
    publish = Recorder()
    now = utcnow()
    report = outbox.relay(workspace.db, publish, batch_size=3, now=now)
    assert report == outbox.RelayReport(sent=3, failed=0)
    assert [p["i"] for _, p in publish.calls] == [0, 1, 2]
    assert outbox.pending(workspace.db) == 2
    assert outbox.relay(workspace.db, publish, now=now) == outbox.RelayReport(sent=2, failed=0)
    assert [p["i"] for _, p in publish.calls] == [0, 1, 2, 3, 4]
    assert outbox.relay(workspace.db, publish, now=now) == outbox.RelayReport(0, 0)
    with workspace.db.session() as s:
        sent = s.scalars(select(OutboxMessage.sent_at)).all()
    assert all(t is not None and t.tzinfo is not None for t in sent)


def test_failing_publish_backs_off_then_succeeds(workspace):
    with workspace.db.session() as s:
        bad = outbox.enqueue(s, "flaky", {"n": 1})
        outbox.enqueue(s, "ok", {"n": 2})
    publish = Recorder(fail_topics={"flaky"})
    t0 = utcnow()
    # A failure does not stop the batch: the next message is still sent.
    assert outbox.relay(workspace.db, publish, now=t0) == outbox.RelayReport(sent=1, failed=1)
    assert publish.calls == [("ok", {"n": 2})]
    with workspace.db.session() as s:
        msg = s.get(OutboxMessage, bad)
        assert msg.attempts == 1 and msg.sent_at is None
        assert msg.last_error == "ConnectionError: broker down"
        assert msg.available_at == t0 + timedelta(seconds=outbox.backoff_s(1))

    # Not retried before available_at, even though it is unsent.
    publish.fail_topics.clear()
    soon = t0 + timedelta(seconds=outbox.backoff_s(1) / 2)
    assert outbox.relay(workspace.db, publish, now=soon) == outbox.RelayReport(0, 0)
    assert outbox.pending(workspace.db) == 1

    # Fails again: the wait doubles.
    publish.fail_topics.add("flaky")
    t1 = t0 + timedelta(seconds=outbox.backoff_s(1))
    assert outbox.relay(workspace.db, publish, now=t1) == outbox.RelayReport(0, 1)
    with workspace.db.session() as s:
        msg = s.get(OutboxMessage, bad)
        assert msg.attempts == 2
        assert msg.available_at == t1 + timedelta(seconds=2 * outbox.backoff_s(1))

    # The broker is back: sent once due.
    publish.fail_topics.clear()
    t2 = t1 + timedelta(seconds=outbox.backoff_s(2))
    assert outbox.relay(workspace.db, publish, now=t2) == outbox.RelayReport(1, 0)
    assert publish.calls[-1] == ("flaky", {"n": 1})
    assert outbox.pending(workspace.db) == 0


def test_backoff_is_exponential_and_capped():
    assert [outbox.backoff_s(a) for a in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert outbox.backoff_s(9) == 256.0
    assert outbox.backoff_s(10) == outbox.BACKOFF_MAX_S
    assert outbox.backoff_s(10_000) == outbox.BACKOFF_MAX_S


def test_relay_rejects_naive_now_and_bad_batch(workspace):
    with pytest.raises(ValueError):
        outbox.relay(workspace.db, Recorder(), now=utcnow().replace(tzinfo=None))
    with pytest.raises(ValueError):
        outbox.relay(workspace.db, Recorder(), batch_size=0)


def test_parallel_relays_never_publish_a_message_twice(workspace):
    """FOR UPDATE SKIP LOCKED on PostgreSQL; the single write lock on SQLite."""
    n = 40
    with workspace.db.session() as s:
        for i in range(n):
            outbox.enqueue(s, "t", {"i": i})
    publish = Recorder(delay_s=0.005)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while outbox.relay(workspace.db, publish, batch_size=5).sent:
                pass
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    ids = sorted(p["i"] for _, p in publish.calls)
    assert ids == list(range(n))  # each exactly once
    assert outbox.pending(workspace.db) == 0
