"""Users' feedback on predictions: validated, idempotent, durable before it is answered.

``record_feedback`` writes a batch of feedback in one transaction and returns one outcome
per item (a bad item does not sink the others). ``FeedbackWriter`` feeds it from a single
thread that gathers whatever requests are waiting into one commit ("group commit"): with
32 clients in flight, one fsync makes ~32 answers durable, which is what lets a small box
take thousands of durable writes a second, and SQLite never sees two writers at once.

Idempotency keys follow Stripe's rules. A key is scoped to the caller's tenant. Replaying
a key returns the first result, and reusing one with a different body is refused. A key
whose first request is still in flight gets a conflict. The check and the write share one
transaction, so no other process can see a half-done request; two processes racing on a
key meet the database's unique constraint, and the loser replays the winner's result.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy.exc
from sqlalchemy import insert, select

from flywheel.db import Database, Feedback, Prediction
from flywheel.db.models import FeedbackKind, utcnow
from flywheel.errors import (
    ConflictError,
    FlywheelError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
)

# Attempts at one request whose idempotency key another process is writing at that moment.
RACE_RETRIES = 5


class IdempotencyMismatchError(InvalidInputError):
    """An Idempotency-Key reused with a different request body."""


@dataclass(frozen=True)
class FeedbackRequest:
    prediction_id: str
    kind: FeedbackKind
    user_id: str
    label: str | None
    tenant: str  # the caller's tenant (from its API key)
    cross_tenant: bool = False  # engineers may give feedback on any tenant's predictions
    idempotency_key: str | None = None  # as the client sent it (unscoped)

    @property
    def scoped_key(self) -> str | None:
        return f"{self.tenant}:{self.idempotency_key}" if self.idempotency_key else None

    @property
    def body_hash(self) -> str:
        body = [self.prediction_id, self.kind.value, self.user_id, self.label]
        return hashlib.sha256(json.dumps(body).encode()).hexdigest()


@dataclass(frozen=True)
class FeedbackRecord:
    id: str
    prediction_id: str
    kind: str
    label: str | None
    user_id: str
    app_id: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: Feedback) -> FeedbackRecord:
        return cls(
            row.id, row.prediction_id, row.kind, row.label, row.user_id, row.app_id, row.created_at
        )


@dataclass(frozen=True)
class FeedbackOutcome:
    record: FeedbackRecord | None = None
    replayed: bool = False  # True: an earlier request with this key made ``record``
    error: FlywheelError | None = None


def _check(req: FeedbackRequest, pred: tuple[str | None, str] | None, labels: Collection[str]):
    """The error for this request, or None when it may be written."""
    if pred is None:
        return NotFoundError(f"no prediction {req.prediction_id!r}")
    owner, predicted = pred
    if owner != req.tenant and not req.cross_tenant:
        return ForbiddenError("this prediction belongs to another tenant")
    if req.kind == FeedbackKind.CORRECT:
        if req.label is None:
            return InvalidInputError("kind 'correct' needs the correct label")
        if req.label not in labels:
            shown = ", ".join(sorted(labels)[:20])
            return InvalidInputError(f"label {req.label!r} is not in the label set ({shown})")
    elif req.label is not None and (req.kind == FeedbackKind.REJECT or req.label != predicted):
        return InvalidInputError(
            f"kind {req.kind.value!r} takes no label (or the predicted one): "
            "send kind 'correct' with the right label"
        )
    return None


class PredictionCache:
    """(tenant, predicted label) per prediction id, bounded. Predictions are never changed
    once written, so a cached entry cannot go stale; it saves a SELECT per group commit."""

    def __init__(self, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[str | None, str]] = OrderedDict()

    def get_many(self, ids: set[str]) -> dict[str, tuple[str | None, str]]:
        return {i: self._items[i] for i in ids if i in self._items}

    def put(self, pid: str, value: tuple[str | None, str]) -> None:
        self._items[pid] = value
        if len(self._items) > self.max_items:
            self._items.popitem(last=False)


def record_feedback(
    db: Database,
    requests: list[FeedbackRequest],
    labels: Collection[str],
    predictions: PredictionCache | None = None,
) -> list[FeedbackOutcome]:
    """Validate and write ``requests`` in one transaction; one outcome each, in order.

    ``labels`` is the label set a correction must come from.
    """
    if not requests:
        return []
    cache = predictions if predictions is not None else PredictionCache()
    try:
        return _record(db, requests, labels, cache)
    except sqlalchemy.exc.IntegrityError:
        # Another process wrote one of these keys first: redo one at a time, so that key
        # becomes a replay and the others are written as usual.
        return [_record_alone(db, r, labels, cache) for r in requests]


def _record_alone(
    db: Database, request: FeedbackRequest, labels: Collection[str], cache: PredictionCache
) -> FeedbackOutcome:
    # The other process may commit the same key between this read and this write again;
    # each retry reads afresh and sees its row once it is committed.
    for attempt in range(RACE_RETRIES):
        try:
            return _record(db, [request], labels, cache)[0]
        except sqlalchemy.exc.IntegrityError:
            if attempt == RACE_RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _to_record(row: Mapping[str, Any]) -> FeedbackRecord:
    return FeedbackRecord(
        row["id"],
        row["prediction_id"],
        row["kind"],
        row["label"],
        row["user_id"],
        row["app_id"],
        row["created_at"],
    )


def _record(
    db: Database,
    requests: list[FeedbackRequest],
    labels: Collection[str],
    cache: PredictionCache,
) -> list[FeedbackOutcome]:
    # SQLAlchemy Core, not ORM objects: this is the hot path of every feedback request, and
    # the unit of work cost more CPU than the queries themselves.
    table = Feedback.__table__
    ids = {r.prediction_id for r in requests}
    keys = {r.scoped_key for r in requests if r.scoped_key}
    outcomes: list[FeedbackOutcome] = []
    rows: list[dict[str, Any]] = []
    with db.engine.begin() as conn:
        preds = cache.get_many(ids)
        if missing := ids - preds.keys():
            query = select(Prediction.id, Prediction.app_id, Prediction.label)
            for pid, app, label in conn.execute(query.where(Prediction.id.in_(missing))):
                preds[pid] = (app, label)
                cache.put(pid, (app, label))
        earlier = (
            {
                row["idempotency_key"]: row
                for row in conn.execute(
                    select(table).where(table.c.idempotency_key.in_(keys))
                ).mappings()
            }
            if keys
            else {}
        )
        in_batch: set[str] = set()
        for req in requests:
            key = req.scoped_key
            if key is not None and key in earlier:
                first = earlier[key]
                if first["request_hash"] != req.body_hash:
                    mismatch = IdempotencyMismatchError(
                        "this Idempotency-Key was used with a different request body"
                    )
                    outcomes.append(FeedbackOutcome(error=mismatch))
                else:
                    outcomes.append(FeedbackOutcome(_to_record(first), replayed=True))
                continue
            if key is not None and key in in_batch:
                outcomes.append(
                    FeedbackOutcome(error=ConflictError("a request with this key is in flight"))
                )
                continue
            error = _check(req, preds.get(req.prediction_id), labels)
            if error is not None:
                outcomes.append(FeedbackOutcome(error=error))
                continue
            if key is not None:
                in_batch.add(key)
            row = {
                "id": str(uuid.uuid4()),
                "prediction_id": req.prediction_id,
                "user_id": req.user_id,
                "app_id": req.tenant,
                "kind": req.kind.value,
                "label": req.label if req.kind == FeedbackKind.CORRECT else None,
                "idempotency_key": key,
                "request_hash": req.body_hash if key else None,
                "created_at": utcnow(),
            }
            rows.append(row)
            outcomes.append(FeedbackOutcome(_to_record(row)))
        if rows:
            conn.execute(insert(table), rows)
    return outcomes


_STOP = object()


class FeedbackWriter:
    """One thread that commits waiting feedback together (group commit).

    ``submit`` returns futures that resolve once their items are committed, so an answer
    sent after ``future.result()`` is durable.
    """

    def __init__(
        self,
        db: Database,
        labels: Callable[[], Collection[str]],
        max_batch: int = 1000,
    ) -> None:
        self.db = db
        self.labels = labels
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._in_flight: set[str] = set()
        self._predictions = PredictionCache()  # only the writer thread touches it
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="feedback-writer", daemon=True)
        self._thread.start()

    def submit(self, requests: list[FeedbackRequest]) -> list[Future[FeedbackOutcome]]:
        futures: list[Future[FeedbackOutcome]] = []
        for req in requests:
            fut: Future[FeedbackOutcome] = Future()
            key = req.scoped_key
            with self._lock:
                busy = key is not None and key in self._in_flight
                if key is not None and not busy:
                    self._in_flight.add(key)
            if busy:
                fut.set_result(
                    FeedbackOutcome(error=ConflictError("a request with this key is in flight"))
                )
            else:
                self._queue.put((req, fut))
            futures.append(fut)
        return futures

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            work = [item for item in batch if item is not _STOP]
            if work:
                self._commit(work)
            if stop:
                return

    def _commit(self, work: list[tuple[FeedbackRequest, Future[FeedbackOutcome]]]) -> None:
        requests = [req for req, _ in work]
        try:
            # Only corrections need the label set: most batches never look it up.
            needs_labels = any(r.kind == FeedbackKind.CORRECT for r in requests)
            outcomes: list[FeedbackOutcome] | BaseException = record_feedback(
                self.db, requests, self.labels() if needs_labels else (), self._predictions
            )
        except BaseException as exc:  # the database is down: each caller gets the error
            outcomes = exc
        # Keys leave the in-flight set before anyone is answered, so an immediate retry
        # after an answer is a replay, not a conflict.
        with self._lock:
            for req in requests:
                if req.scoped_key:
                    self._in_flight.discard(req.scoped_key)
        for i, (_, fut) in enumerate(work):
            if isinstance(outcomes, BaseException):
                fut.set_exception(outcomes)
            else:
                fut.set_result(outcomes[i])
