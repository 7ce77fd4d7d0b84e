"""flywheel.client against the real app under uvicorn: results, errors, and safe retries.

Failures are injected by a transport wrapper in front of the real HTTP transport, so the
server really processes each request the wrapper forwards (a "lost response" was written).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator

import fsspec
import httpx
import pytest
from sqlalchemy import func, select

from flywheel.client import (
    AuthError,
    BatchResult,
    Conflict,
    FeedbackItem,
    FlywheelAPIError,
    FlywheelClient,
    FlywheelConnectionError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServerError,
    UnsupportedMedia,
)
from flywheel.db import Feedback
from flywheel.workspace import Workspace
from tests.api.conftest import CLASSES

pytestmark = pytest.mark.integration

# What the wrapper does to one request: "forward", "lose" (forward, then ReadTimeout),
# "refuse" (ConnectError, never sent), or an (HTTP status, error code) to answer instead.
Action = str | tuple[int, str]


class Faults(httpx.BaseTransport):
    """Forwards to the real server; ``plan`` scripts the first attempts to matching paths."""

    def __init__(self, path: str = "", plan: list[Action] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.plan = list(plan or [])
        self.seen: list[httpx.Request] = []  # every request to a matching path

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith(self.path):
            return self.inner.handle_request(request)
        self.seen.append(request)
        action = self.plan.pop(0) if self.plan else "forward"
        if action == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(action, tuple):
            status, code = action
            body = {"error": {"code": code, "message": "injected"}}
            return httpx.Response(status, json=body, headers={"Retry-After": "0"})
        response = self.inner.handle_request(request)
        if action == "lose":
            response.read()  # the server answered; the answer never reaches the caller
            response.close()
            raise httpx.ReadTimeout("injected: the answer was lost", request=request)
        return response

    @property
    def keys(self) -> list[str | None]:
        return [r.headers.get("Idempotency-Key") for r in self.seen]

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def connect(live_server, keys) -> Iterator[Callable[..., FlywheelClient]]:
    """``connect(token=keys.app, faults=None, retries=3)``: a client without real waits."""
    made: list[FlywheelClient] = []

    def make(
        token: str | None = None, faults: Faults | None = None, retries: int = 3
    ) -> FlywheelClient:
        c = FlywheelClient(
            live_server.url, token or keys.app, timeout=30, retries=retries, transport=faults
        )
        c._sleep = lambda s: None  # backoff is tested on its own: keep the suite fast
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def n_feedback(ws: Workspace, prediction_id: str | None = None) -> int:
    q = select(func.count()).select_from(Feedback)
    if prediction_id is not None:
        q = q.where(Feedback.prediction_id == prediction_id)
    with ws.db.session() as s:
        return int(s.scalar(q) or 0)


def test_predict_by_bytes_path_and_sample(connect, make_png, tmp_path):
    fw = connect()
    assert fw.health() is True
    ready = fw.ready()
    assert ready.ready and ready.checks["database"].ok

    data = make_png(1)
    by_bytes = fw.predict(data)
    assert by_bytes.model_version == "1" and by_bytes.label in CLASSES
    assert by_bytes.sample_id == hashlib.sha256(data).hexdigest()
    assert len(by_bytes.top_k) == 5  # the server's default
    assert by_bytes.top_k[0].label == by_bytes.label
    assert by_bytes.confidence == by_bytes.top_k[0].probability

    path = tmp_path / "digit.png"
    path.write_bytes(make_png(2))
    by_path = fw.predict(path, top_k=3)
    assert len(by_path.top_k) == 3
    assert by_path.sample_id == hashlib.sha256(make_png(2)).hexdigest()
    assert fw.predict(str(path)).sample_id == by_path.sample_id

    again = fw.predict_sample(by_path.sample_id, top_k=2)
    assert again.sample_id == by_path.sample_id and len(again.top_k) == 2
    assert again.prediction_id != by_path.prediction_id


def test_feedback_written_then_replayed(connect, make_png, api_workspace):
    fw = connect()
    pid = fw.predict(make_png(3)).prediction_id
    first = fw.feedback(pid, "correct", "u1", label="7", idempotency_key="k-1")
    assert (first.replayed, first.kind, first.label, first.idempotency_key) == (
        False,
        "correct",
        "7",
        "k-1",
    )
    replay = fw.feedback(pid, "correct", "u1", label="7", idempotency_key="k-1")
    assert replay.replayed and replay.feedback_id == first.feedback_id
    # No key given: each call makes its own, so two calls are two writes.
    a, b = fw.feedback(pid, "confirm", "u2"), fw.feedback(pid, "confirm", "u2")
    assert not a.replayed and not b.replayed
    assert str(uuid.UUID(a.idempotency_key or "")) == a.idempotency_key
    assert a.idempotency_key != b.idempotency_key
    assert n_feedback(api_workspace, pid) == 3
    with pytest.raises(InvalidRequest) as err:  # same key, another body
        fw.feedback(pid, "reject", "u1", idempotency_key="k-1")
    assert err.value.code == "idempotency_key_reused"


def test_retry_after_lost_answers_writes_once(connect, make_png, api_workspace):
    pid = connect().predict(make_png(4)).prediction_id
    faults = Faults("/v1/feedback", ["lose", "lose"])
    fb = connect(faults=faults).feedback(pid, "reject", "u1")
    assert len(faults.seen) == 3
    assert len(set(faults.keys)) == 1 and faults.keys[0] == fb.idempotency_key
    assert fb.replayed  # the server wrote it on the first attempt
    assert n_feedback(api_workspace, pid) == 1
    with api_workspace.db.session() as s:
        assert s.scalars(select(Feedback.id).where(Feedback.prediction_id == pid)).one() == (
            fb.feedback_id
        )


def test_transient_statuses_are_retried_with_the_same_key(connect, make_png, api_workspace):
    pid = connect().predict(make_png(5)).prediction_id
    faults = Faults("/v1/feedback", [(503, "http_503"), (409, "conflict"), "refuse"])
    fb = connect(faults=faults).feedback(pid, "confirm", "u1")
    assert len(faults.seen) == 4 and len(set(faults.keys)) == 1
    assert not fb.replayed and n_feedback(api_workspace, pid) == 1

    # Out of retries: the last answer is raised.
    faults = Faults("/v1/feedback", [(503, "http_503")] * 3)
    with pytest.raises(ServerError) as err:
        connect(faults=faults, retries=2).feedback(pid, "confirm", "u1")
    assert err.value.status == 503 and len(faults.seen) == 3
    faults = Faults("/healthz", ["refuse"] * 2)
    with pytest.raises(FlywheelConnectionError):
        connect(faults=faults, retries=1).health()
    assert len(faults.seen) == 2


def test_other_conflicts_and_lost_predictions_are_not_retried(connect, make_png):
    faults = Faults("/v1/feedback", [(409, "integrity")])
    with pytest.raises(Conflict) as err:
        connect(faults=faults).feedback("p", "confirm", "u1")
    assert err.value.code == "integrity" and len(faults.seen) == 1
    # A prediction is recorded per request: a lost answer is not replayed blindly...
    faults = Faults("/v1/predict", ["lose"])
    with pytest.raises(FlywheelConnectionError):
        connect(faults=faults).predict(make_png(6))
    assert len(faults.seen) == 1
    # ...but one that never left is.
    faults = Faults("/v1/predict", ["refuse", (503, "http_503")])
    assert connect(faults=faults).predict(make_png(6)).model_version == "1"
    assert len(faults.seen) == 3


def test_errors_map_to_exceptions_without_retries(connect, keys, make_png, api_workspace):
    pid = connect().predict(make_png(7)).prediction_id
    faults = Faults("/v1")
    fw = connect(faults=faults)
    cases: list[tuple[Callable[[], object], type[FlywheelAPIError], int, str]] = [
        (lambda: fw.feedback("no-such-id", "confirm", "u"), NotFound, 404, "not_found"),
        (lambda: fw.predict_sample("0" * 64), NotFound, 404, "not_found"),
        (lambda: fw.feedback(pid, "correct", "u"), InvalidRequest, 422, "invalid_input"),
        (lambda: fw.feedback(pid, "maybe", "u"), InvalidRequest, 422, "invalid_request"),
        (lambda: fw.predict(b"plain text"), UnsupportedMedia, 415, "unsupported_media"),
    ]
    for call, cls, status, code in cases:
        before = len(faults.seen)
        with pytest.raises(cls) as err:
            call()
        assert (err.value.status, err.value.code) == (status, code), err.value
        assert len(faults.seen) == before + 1, f"{code} was retried"
        assert err.value.message
    # Validation errors keep the server's details.
    with pytest.raises(InvalidRequest) as err:
        fw.feedback(pid, "maybe", "u")
    assert err.value.details and err.value.details[0]["loc"][-1] == "kind"

    for token in (keys.revoked, "fw_nope_nope"):
        faults = Faults("/v1")
        with pytest.raises(AuthError) as err:
            connect(token, faults).feedback(pid, "confirm", "u")
        assert (err.value.status, err.value.code) == (401, "unauthorized")
        assert len(faults.seen) == 1
    with pytest.raises(PermissionDenied) as err:  # another tenant's prediction
        connect(keys.other_app).feedback(pid, "confirm", "u")
    assert (err.value.status, err.value.code) == (403, "forbidden")
    assert n_feedback(api_workspace, pid) == 0


def test_feedback_batch(connect, make_png, api_workspace):
    fw = connect()
    p1, p2 = (fw.predict(make_png(i)).prediction_id for i in (8, 9))
    items = [
        FeedbackItem(p1, "confirm", "u1"),
        {"prediction_id": p2, "kind": "correct", "user_id": "u1", "label": "3"},
        FeedbackItem("no-such-id", "confirm", "u1"),
    ]
    res = fw.feedback_batch(items)
    assert isinstance(res, BatchResult)
    assert (res.written, res.replayed, res.failed) == (2, 0, 1)
    assert [r.status for r in res.results] == [201, 201, 404]
    assert res.results[2].error is not None and res.results[2].error.code == "not_found"
    assert res.results[1].feedback is not None and res.results[1].feedback.label == "3"
    assert len({r.idempotency_key for r in res.results}) == 3

    # The keys on the result make a later resend a replay.
    again = fw.feedback_batch(
        [FeedbackItem(p1, "confirm", "u1", idempotency_key=res.results[0].idempotency_key)]
    )
    assert again.replayed == 1 and again.results[0].feedback is not None
    assert res.results[0].feedback is not None
    assert again.results[0].feedback.feedback_id == res.results[0].feedback.feedback_id

    # Two items with one key: the server answers the second "in flight" (409); the client
    # resends it, and it comes back as a replay of the first.
    same = FeedbackItem(p2, "reject", "u2", idempotency_key="dup")
    faults = Faults("/v1/feedback/batch")
    dup = connect(faults=faults).feedback_batch([same, same])
    assert [r.status for r in dup.results] == [201, 200]
    assert (dup.written, dup.replayed, dup.failed) == (1, 1, 0)
    assert len(faults.seen) == 2
    ids = {r.feedback.feedback_id for r in dup.results if r.feedback}
    assert len(ids) == 1
    assert n_feedback(api_workspace) == 3

    # A lost batch answer: the resend replays every item.
    faults = Faults("/v1/feedback/batch", ["lose"])
    lost = connect(faults=faults).feedback_batch([FeedbackItem(p1, "reject", "u3")] * 1)
    assert (lost.written, lost.replayed) == (0, 1) and len(faults.seen) == 2
    assert n_feedback(api_workspace) == 4


def test_upload_samples(connect, keys, make_png, tmp_path):
    fw = connect()
    path = tmp_path / "b.png"
    path.write_bytes(make_png(21))
    res = fw.upload_samples([make_png(20), path, ("junk.txt", b"not an image")])
    assert res.added == 2 and res.duplicates == ()
    assert res.sample_ids == tuple(
        hashlib.sha256(d).hexdigest() for d in (make_png(20), make_png(21))
    )
    assert [(r.name, bool(r.reason)) for r in res.rejected] == [("junk.txt", True)]

    again = fw.upload_samples([("a.png", make_png(20)), make_png(22)])
    assert again.added == 1 and again.duplicates == ("a.png",)

    with pytest.raises(UnsupportedMedia) as err:  # every file refused
        fw.upload_samples([("x.txt", b"text")])
    assert err.value.details and err.value.details[0]["name"] == "x.txt"
    with pytest.raises(PermissionDenied):
        fw.upload_samples([make_png(23)], label="3")
    assert connect(keys.engineer).upload_samples([make_png(23)], label="3").added == 1
    with pytest.raises(ValueError):
        fw.upload_samples([])

    # By URI: memory:// is per process, and this server runs in the test process.
    root = f"flywheel-test/client-{uuid.uuid4().hex}"  # under the test settings' root
    fsspec.filesystem("memory").pipe(f"/{root}/c.png", make_png(24))
    with pytest.raises(PermissionDenied):  # app keys may not register URIs by default
        fw.upload_uris([f"memory://{root}/c.png"])
    fw = connect(keys.engineer)
    by_uri = fw.upload_uris([f"memory://{root}/c.png", {"uri": f"memory://{root}/gone.png"}])
    assert by_uri.sample_ids == (hashlib.sha256(make_png(24)).hexdigest(),)
    assert len(by_uri.rejected) == 1 and "not found" in by_uri.rejected[0].reason


def test_backoff_grows_with_jitter_and_honours_retry_after(live_server, keys):
    faults = Faults("/healthz", [(503, "x")] * 4)
    waits: list[float] = []
    with FlywheelClient(live_server.url, keys.app, retries=4, backoff=0.1, transport=faults) as fw:
        fw._sleep = waits.append
        assert fw.health()
    assert len(waits) == 4
    for n, w in enumerate(waits):  # Retry-After: 0 does not lower the backoff
        assert 0.1 * 2**n * 0.5 <= w < 0.1 * 2**n * 1.5
