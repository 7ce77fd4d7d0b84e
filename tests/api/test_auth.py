"""Keys and roles: 401 without a valid key, 403 for the wrong role; metrics/probes are open."""

from __future__ import annotations

import pytest

from flywheel.serve.api_keys import revoke_key
from tests.api.conftest import auth

FEEDBACK = {"prediction_id": "nope", "kind": "confirm", "user_id": "u"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer fw_unknown_secret"},
        {"Authorization": "Bearer not-a-flywheel-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "fw__"},
    ],
)
def test_missing_or_bad_key_is_401(client, headers):
    r = client.post("/v1/feedback", json=FEEDBACK, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_wrong_secret_for_a_real_key_id_is_401(client, keys):
    key_id = keys.app.split("_")[1]
    r = client.post("/v1/feedback", json=FEEDBACK, headers=auth(f"fw_{key_id}_wrong"))
    assert r.status_code == 401


def test_revoked_key_is_401(client, keys):
    r = client.post("/v1/feedback", json=FEEDBACK, headers=auth(keys.revoked))
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]["message"]


def test_revocation_takes_effect_on_a_live_key(client, keys, api_workspace):
    assert client.post("/v1/feedback", json=FEEDBACK, headers=auth(keys.app)).status_code == 404
    revoke_key(api_workspace.db, keys.app.split("_")[1])
    assert client.post("/v1/feedback", json=FEEDBACK, headers=auth(keys.app)).status_code == 401


def test_x_api_key_header_works(client, keys):
    r = client.post("/v1/feedback", json=FEEDBACK, headers={"X-API-Key": keys.app})
    assert r.status_code == 404  # authenticated; the prediction does not exist


def test_probes_and_metrics_need_no_key(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert set(ready.json()["checks"]) == {"database", "blob_store", "broker", "model"}
    assert client.get("/metrics").status_code == 200


def test_openapi_documents_bearer_auth(client):
    doc = client.get("/openapi.json").json()
    assert "/v1/feedback" in doc["paths"]
    assert any(s.get("scheme") == "bearer" for s in doc["components"]["securitySchemes"].values())
