"""The feedback library: validation, idempotency rules and the group-commit writer."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from flywheel.db import Feedback, Prediction
from flywheel.db.models import FeedbackKind
from flywheel.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from flywheel.feedback.writer import (
    FeedbackRequest,
    FeedbackWriter,
    IdempotencyMismatchError,
    record_feedback,
)
from flywheel.workspace import Workspace
from tests.conftest import sample_row

LABELS = ["cat", "dog"]


@pytest.fixture
def prediction_id(workspace: Workspace) -> str:
    pid = str(uuid.uuid4())
    with workspace.db.session() as s:
        s.add(sample_row(int("a" * 64, 16)))
        s.flush()
        s.add(
            Prediction(
                id=pid,
                sample_id="a" * 64,
                model_version="1",
                label="cat",
                confidence=0.9,
                top_k=[],
                app_id="shop",
            )
        )
    return pid


def req(pid: str, kind: str = "confirm", label: str | None = None, **kw) -> FeedbackRequest:
    return FeedbackRequest(
        pid, FeedbackKind(kind), kw.pop("user", "u"), label, kw.pop("tenant", "shop"), **kw
    )


def count(ws: Workspace) -> int:
    with ws.db.session() as s:
        return s.scalar(select(func.count()).select_from(Feedback))


def test_one_bad_item_does_not_sink_the_batch(workspace, prediction_id):
    outs = record_feedback(
        workspace.db,
        [
            req(prediction_id),
            req("missing"),
            req(prediction_id, tenant="other"),
            req(prediction_id, tenant="other", cross_tenant=True),
            req(prediction_id, "correct", "bird"),
            req(prediction_id, "correct"),
            req(prediction_id, "confirm", "dog"),  # a confirm naming another label
            req(prediction_id, "confirm", "cat"),  # naming the predicted label is fine
            req(prediction_id, "reject", "cat"),
            req(prediction_id, "correct", "dog"),
        ],
        LABELS,
    )
    kinds = [type(o.error) if o.error else None for o in outs]
    assert kinds == [
        None,
        NotFoundError,
        ForbiddenError,
        None,
        InvalidInputError,
        InvalidInputError,
        InvalidInputError,
        None,
        InvalidInputError,
        None,
    ]
    assert count(workspace) == 4
    with workspace.db.session() as s:
        by_kind = dict(s.execute(select(Feedback.kind, func.count()).group_by(Feedback.kind)).all())
    assert by_kind == {"confirm": 3, "correct": 1}


def test_idempotency_rules(workspace, prediction_id):
    first = record_feedback(workspace.db, [req(prediction_id, idempotency_key="k")], LABELS)[0]
    replay = record_feedback(workspace.db, [req(prediction_id, idempotency_key="k")], LABELS)[0]
    assert replay.replayed and replay.record == first.record
    changed = record_feedback(
        workspace.db, [req(prediction_id, "reject", idempotency_key="k")], LABELS
    )[0]
    assert isinstance(changed.error, IdempotencyMismatchError)
    twice = record_feedback(workspace.db, [req(prediction_id, idempotency_key="j")] * 2, LABELS)
    assert twice[0].record is not None and isinstance(twice[1].error, ConflictError)
    assert count(workspace) == 2


def test_writer_answers_a_key_in_flight_with_conflict(workspace, prediction_id):
    gate = threading.Event()

    def slow_labels() -> list[str]:
        gate.wait(5)  # holds the first commit open
        return LABELS

    writer = FeedbackWriter(workspace.db, slow_labels)
    try:
        (first,) = writer.submit([req(prediction_id, idempotency_key="k")])
        (second,) = writer.submit([req(prediction_id, idempotency_key="k")])
        assert isinstance(second.result(1).error, ConflictError)
        gate.set()
        assert first.result(5).record is not None
        # Once answered, the key is no longer in flight: a retry is a replay.
        (third,) = writer.submit([req(prediction_id, idempotency_key="k")])
        assert third.result(5).replayed
    finally:
        gate.set()
        writer.close()
    assert count(workspace) == 1


def test_writers_in_two_processes_racing_on_keys_write_each_once(workspace, prediction_id):
    """Two writers (as in two API processes) on one DB: the unique key decides, no dupes."""
    writers = [FeedbackWriter(workspace.db, lambda: LABELS) for _ in range(2)]
    try:

        def send(i: int):
            w = writers[i % 2]
            return w.submit([req(prediction_id, idempotency_key=f"k{i // 2}")])[0].result(30)

        with ThreadPoolExecutor(16) as pool:
            outs = list(pool.map(send, range(80)))
    finally:
        for w in writers:
            w.close()
    assert all(o.error is None or isinstance(o.error, ConflictError) for o in outs)
    assert count(workspace) == 40


def test_writer_passes_errors_to_callers_and_reads_labels_only_for_corrections(
    workspace, prediction_id
):
    calls = []

    def broken() -> list[str]:
        calls.append(1)
        raise RuntimeError("database is down")

    writer = FeedbackWriter(workspace.db, broken)
    try:
        (confirm,) = writer.submit([req(prediction_id)])
        assert confirm.result(5).record is not None and calls == []
        (fut,) = writer.submit([req(prediction_id, "correct", "dog")])
        with pytest.raises(RuntimeError, match="down"):
            fut.result(5)
    finally:
        writer.close()
    assert count(workspace) == 1 and calls == [1]
