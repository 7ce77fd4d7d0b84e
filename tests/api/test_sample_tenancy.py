"""Samples are scoped to tenants: only those that sent one (and engineers) may see it.

Another tenant's app key gets the same 404 as for an unknown id, on metadata, bytes and
predict-by-id, so a sample id does not reveal that the sample exists.
"""

from __future__ import annotations

import hashlib
import uuid

import fsspec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from flywheel.db import Prediction, Sample, SampleAccess
from tests.api.conftest import auth

READS = ("/v1/samples/{}", "/v1/samples/{}/image")


def _upload(client, token, data: bytes, name: str = "a.png"):
    r = client.post(
        "/v1/samples", files=[("files", (name, data, "image/png"))], headers=auth(token)
    )
    assert r.status_code == 201, r.text
    return r.json()


def _predict_by_id(client, token, sid: str):
    return client.post("/v1/predict", data={"sample_id": sid}, headers=auth(token))


def _tenants(ws, sid: str) -> set[str]:
    with ws.db.session() as s:
        return set(s.scalars(select(SampleAccess.tenant).where(SampleAccess.sample_id == sid)))


def test_another_tenant_gets_the_unknown_id_404(client, keys, make_png, api_workspace):
    sid = _upload(client, keys.app, make_png(201))["sample_ids"][0]
    unknown = "f" * 64
    for path in READS:
        mine = client.get(path.format(sid), headers=auth(keys.app))
        assert mine.status_code == 200, mine.text
        theirs = client.get(path.format(sid), headers=auth(keys.other_app))
        missing = client.get(path.format(unknown), headers=auth(keys.other_app))
        assert theirs.status_code == missing.status_code == 404
        # Same answer as an unknown id, but for the id itself: existence does not leak.
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"]
        assert theirs.text.replace(sid, unknown) == missing.text
        assert "shop" not in theirs.text and "a.png" not in theirs.text

    with api_workspace.db.session() as s:
        before = s.scalar(select(func.count()).select_from(Prediction))
    theirs, missing = (
        _predict_by_id(client, keys.other_app, sid),
        _predict_by_id(client, keys.other_app, unknown),
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(sid, unknown) == missing.text
    assert _predict_by_id(client, keys.app, sid).status_code == 201
    with api_workspace.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == before + 1
    assert _tenants(api_workspace, sid) == {"shop"}  # a refused read grants nothing


def test_uploading_the_same_bytes_grants_access(client, keys, make_png, api_workspace):
    data = make_png(202)
    sid = _upload(client, keys.app, data)["sample_ids"][0]
    assert client.get(f"/v1/samples/{sid}", headers=auth(keys.other_app)).status_code == 404
    again = _upload(client, keys.other_app, data, name="mine.png")
    assert again["added"] == 0 and again["duplicates"] == ["mine.png"]
    img = client.get(f"/v1/samples/{sid}/image", headers=auth(keys.other_app))
    assert img.status_code == 200 and img.content == data
    assert _predict_by_id(client, keys.other_app, sid).status_code == 201
    assert _tenants(api_workspace, sid) == {"shop", "other"}


def test_duplicates_within_one_upload_are_granted(client, keys, make_png, api_workspace):
    data = make_png(203)
    _upload(client, keys.app, data)
    r = client.post(
        "/v1/samples",
        files=[("files", ("x.png", data, "image/png")), ("files", ("y.png", data, "image/png"))],
        headers=auth(keys.other_app),
    )
    assert r.status_code == 201 and sorted(r.json()["duplicates"]) == ["x.png", "y.png"]
    assert _tenants(api_workspace, hashlib.sha256(data).hexdigest()) == {"shop", "other"}


def test_engineers_see_every_sample(client, keys, make_png, api_workspace):
    data = make_png(204)
    sid = _upload(client, keys.app, data)["sample_ids"][0]
    meta = client.get(f"/v1/samples/{sid}", headers=auth(keys.engineer))
    assert meta.status_code == 200 and meta.json()["source"] == "upload:shop"
    img = client.get(f"/v1/samples/{sid}/image", headers=auth(keys.engineer))
    assert img.status_code == 200 and img.content == data
    assert _predict_by_id(client, keys.engineer, sid).status_code == 201
    assert _tenants(api_workspace, sid) == {"shop"}  # reading grants nothing


def test_pool_samples_no_tenant_sent_are_engineers_only(client, keys, api_workspace):
    with api_workspace.db.session() as s:
        sid = s.scalars(select(SampleAccess.sample_id)).first()
    assert sid is None  # the fixture's digits came in through the CLI: no tenant holds them
    with api_workspace.db.session() as s:
        sid = s.scalars(select(Sample.id).where(Sample.split == "pool")).first()
    assert client.get(f"/v1/samples/{sid}", headers=auth(keys.app)).status_code == 404
    assert _predict_by_id(client, keys.app, sid).status_code == 404
    assert client.get(f"/v1/samples/{sid}", headers=auth(keys.engineer)).status_code == 200


def test_registering_a_uri_grants_its_sample(api_settings, keys, make_png, api_workspace):
    root = f"flywheel-test-{uuid.uuid4().hex}"  # a bucket of fsspec's in-memory store
    fsspec.filesystem("memory").pipe(f"/{root}/a.png", make_png(207))
    ingest = api_settings.ingest.model_copy(
        update={"uri_roots": [f"memory://{root}"], "app_keys_may_register_uris": True}
    )
    settings = api_settings.model_copy(update={"ingest": ingest})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = {"items": [{"uri": f"memory://{root}/a.png"}]}
        r = client.post("/v1/samples/uris", json=body, headers=auth(keys.app))
        assert r.status_code == 201, r.text
        sid = r.json()["sample_ids"][0]
        assert client.get(f"/v1/samples/{sid}", headers=auth(keys.app)).status_code == 200
        assert client.get(f"/v1/samples/{sid}", headers=auth(keys.other_app)).status_code == 404
        # Registering bytes already stored (here: under the same URI) grants them as well.
        r = client.post("/v1/samples/uris", json=body, headers=auth(keys.other_app))
        assert r.status_code == 201 and r.json()["added"] == 0, r.text
        assert client.get(f"/v1/samples/{sid}", headers=auth(keys.other_app)).status_code == 200
    assert _tenants(api_workspace, sid) == {"shop", "other"}


def test_predicting_on_a_file_grants_its_sample(client, keys, make_png, api_workspace):
    data = make_png(205)
    r = client.post(
        "/v1/predict", files={"file": ("p.png", data, "image/png")}, headers=auth(keys.app)
    )
    assert r.status_code == 201, r.text
    sid = r.json()["sample_id"]
    assert client.get(f"/v1/samples/{sid}/image", headers=auth(keys.app)).content == data
    assert _predict_by_id(client, keys.app, sid).status_code == 201
    assert client.get(f"/v1/samples/{sid}", headers=auth(keys.other_app)).status_code == 404
    # The other tenant predicting on the same bytes (already stored) gets them too.
    r = client.post(
        "/v1/predict", files={"file": ("q.png", data, "image/png")}, headers=auth(keys.other_app)
    )
    assert r.status_code == 201 and r.json()["sample_id"] == sid
    assert client.get(f"/v1/samples/{sid}", headers=auth(keys.other_app)).status_code == 200
    assert _tenants(api_workspace, sid) == {"shop", "other"}


def test_feedback_on_another_tenants_sample_has_no_way_in(client, keys, make_png):
    """Feedback names a prediction, and predictions are the tenant's own: with predict-by-id
    scoped, another tenant can neither make a prediction on the sample nor use the owner's."""
    data = make_png(206)
    sid = _upload(client, keys.app, data)["sample_ids"][0]
    pid = _predict_by_id(client, keys.app, sid).json()["prediction_id"]
    assert _predict_by_id(client, keys.other_app, sid).status_code == 404
    body = {"prediction_id": pid, "kind": "confirm", "user_id": "u"}
    r = client.post("/v1/feedback", json=body, headers=auth(keys.other_app))
    assert r.status_code == 403
    r = client.post("/v1/feedback", json=body, headers=auth(keys.app))
    assert r.status_code == 201, r.text


def test_ui_thumbnails_take_no_app_key(client, keys, make_png):
    """The UI serves samples only to an engineer's session cookie; a bearer key is not one."""
    sid = _upload(client, keys.app, make_png(208))["sample_ids"][0]
    r = client.get(f"/ui/thumb/{sid}", headers=auth(keys.app), follow_redirects=False)
    assert r.status_code == 303 and "/ui/login" in r.headers["location"]
