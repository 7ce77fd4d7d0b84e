"""POST /v1/feedback (+ batch): validation, tenants, Stripe-style idempotency, durability."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from flywheel.db import Feedback
from tests.api.conftest import auth


@pytest.fixture
def prediction(client, keys, make_png) -> dict:
    r = client.post(
        "/v1/predict", files={"file": ("x.png", make_png(11), "image/png")}, headers=auth(keys.app)
    )
    assert r.status_code == 201
    return r.json()


def n_feedback(ws) -> int:
    with ws.db.session() as s:
        return s.scalar(select(func.count()).select_from(Feedback))


def post(client, token, body, key=None):
    headers = {**auth(token), **({"Idempotency-Key": key} if key else {})}
    return client.post("/v1/feedback", json=body, headers=headers)


def test_each_kind_is_committed(client, keys, prediction, api_workspace):
    pid = prediction["prediction_id"]
    bodies = [
        {"prediction_id": pid, "kind": "confirm", "user_id": "ann"},
        {"prediction_id": pid, "kind": "correct", "label": "7", "user_id": "bob"},
        {"prediction_id": pid, "kind": "reject", "user_id": "cy"},
    ]
    for body in bodies:
        r = post(client, keys.app, body)
        assert r.status_code == 201, r.text
        assert r.json()["replayed"] is False
    assert n_feedback(api_workspace) == 3
    with api_workspace.db.session() as s:
        rows = {f.user_id: f for f in s.scalars(select(Feedback))}
    assert rows["bob"].label == "7" and rows["bob"].app_id == "shop"
    assert rows["ann"].label is None and rows["cy"].kind == "reject"


def test_idempotency_replay_mismatch_and_scope(client, keys, prediction, api_workspace):
    body = {"prediction_id": prediction["prediction_id"], "kind": "confirm", "user_id": "u"}
    first = post(client, keys.app, body, key="abc")
    again = post(client, keys.app, body, key="abc")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["feedback_id"] == first.json()["feedback_id"]
    assert again.json()["replayed"] is True
    other = post(client, keys.app, {**body, "user_id": "someone else"}, key="abc")
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert n_feedback(api_workspace) == 1
    # Keys are scoped per tenant: the engineer tenant's "abc" is a different key.
    assert post(client, keys.engineer, body, key="abc").status_code == 201
    assert n_feedback(api_workspace) == 2


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"kind": "confirm", "user_id": "u"}, 422),  # no prediction id
        ({"prediction_id": "P", "kind": "maybe", "user_id": "u"}, 422),
        ({"prediction_id": "P", "kind": "correct", "user_id": "u"}, 422),  # no label
        ({"prediction_id": "P", "kind": "correct", "label": "cat", "user_id": "u"}, 422),
        ({"prediction_id": "P", "kind": "reject", "label": "3", "user_id": "u"}, 422),
        ({"prediction_id": "P", "kind": "confirm", "user_id": ""}, 422),
        ({"prediction_id": "P", "kind": "confirm", "user_id": "u", "extra": 1}, 422),
        ({"prediction_id": "missing", "kind": "confirm", "user_id": "u"}, 404),
    ],
)
def test_bad_feedback_is_refused_and_writes_nothing(
    client, keys, prediction, api_workspace, body, status
):
    if body.get("prediction_id") == "P":
        body = {**body, "prediction_id": prediction["prediction_id"]}
    r = post(client, keys.app, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    assert n_feedback(api_workspace) == 0


def test_malformed_json_is_422(client, keys):
    r = client.post(
        "/v1/feedback",
        content=b"{not json",
        headers={**auth(keys.app), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_other_tenants_prediction_is_403_but_engineers_may(client, keys, prediction):
    body = {"prediction_id": prediction["prediction_id"], "kind": "confirm", "user_id": "u"}
    assert post(client, keys.other_app, body).status_code == 403
    assert post(client, keys.engineer, body).status_code == 201


def test_oversized_body_is_413(tmp_path, db_url, model_store, api_workspace, keys):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.api.conftest import api_settings_for

    settings = api_settings_for(
        api_workspace.settings.data_dir, db_url, model_store, max_body_bytes=300
    )
    with TestClient(create_app(settings)) as small:
        body = {"prediction_id": "x", "kind": "confirm", "user_id": "u" * 190}
        items = {"items": [body] * 5}
        r = small.post("/v1/feedback/batch", json=items, headers=auth(keys.app))
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert n_feedback(api_workspace) == 0


def test_batch_reports_per_item_and_replays(client, keys, prediction, api_workspace):
    pid = prediction["prediction_id"]
    items = [
        {"prediction_id": pid, "kind": "confirm", "user_id": "a"},
        {"prediction_id": pid, "kind": "correct", "label": "nope", "user_id": "b"},
        {"prediction_id": "missing", "kind": "confirm", "user_id": "c"},
        {"prediction_id": pid, "kind": "correct", "label": "2", "user_id": "d"},
    ]
    headers = {**auth(keys.app), "Idempotency-Key": "buffer-1"}
    r = client.post("/v1/feedback/batch", json={"items": items}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["written"], body["replayed"], body["failed"]) == (2, 0, 2)
    assert [x["status"] for x in body["results"]] == [201, 422, 404, 201]
    again = client.post("/v1/feedback/batch", json={"items": items}, headers=headers).json()
    assert (again["written"], again["replayed"], again["failed"]) == (0, 2, 2)
    assert n_feedback(api_workspace) == 2


def test_batch_over_the_item_limit_is_422(client, keys):
    items = [{"prediction_id": "p", "kind": "confirm", "user_id": "u"}] * 1001
    r = client.post("/v1/feedback/batch", json={"items": items}, headers=auth(keys.app))
    assert r.status_code == 422
    assert "at most 1000" in r.json()["error"]["message"]


@pytest.mark.integration
def test_concurrent_feedback_over_real_http(live_server, keys, api_workspace, make_png):
    """32 clients at once on a real uvicorn: every 2xx is in the DB; one key, one row."""
    with httpx.Client(base_url=live_server.url, headers=auth(keys.app)) as c:
        files = {"file": ("x.png", make_png(12), "image/png")}
        pid = c.post("/v1/predict", files=files).json()["prediction_id"]

        def send(i: int) -> int:
            body = {"prediction_id": pid, "kind": "confirm", "user_id": f"u{i % 7}"}
            return c.post(
                "/v1/feedback", json=body, headers={"Idempotency-Key": f"k{i}"}
            ).status_code

        def send_same(i: int) -> tuple[int, str | None]:
            body = {"prediction_id": pid, "kind": "reject", "user_id": "same"}
            r = c.post("/v1/feedback", json=body, headers={"Idempotency-Key": "one-key"})
            return r.status_code, r.json().get("feedback_id")

        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(send, range(200)))
            same = list(pool.map(send_same, range(32)))
    assert statuses.count(201) == 200
    assert {s for s, _ in same} <= {200, 201, 409}
    assert sum(1 for s, _ in same if s == 201) == 1
    assert len({f for s, f in same if s in (200, 201)}) == 1
    assert n_feedback(api_workspace) == 201
