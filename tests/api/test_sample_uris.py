"""POST /v1/samples/uris at the input edge: URIs only under configured roots, read by a
client built from settings, with remote errors kept to the server log."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from flywheel.config import Settings
from flywheel.db import Sample
from flywheel.workspace import Workspace
from tests.api.conftest import auth
from tests.endpoints import black_hole, refusing_port

pytestmark = pytest.mark.integration


def _with_ingest(settings: Settings, **ingest: object) -> Settings:
    return settings.model_copy(update={"ingest": settings.ingest.model_copy(update=ingest)})


def _n_samples(ws: Workspace) -> int:
    with ws.db.session() as s:
        return s.scalar(select(func.count()).select_from(Sample)) or 0


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_a_uri_cannot_point_the_server_anywhere(api_settings, api_workspace, keys, s3):
    """The reported request: a query naming an endpoint. Refused; nothing is contacted."""
    settings = _with_ingest(api_settings, uri_roots=[s3.root("bkt", "imgs")])
    before = _n_samples(api_workspace)
    with black_hole() as listener, _client(settings) as client:
        for uri in (
            f"s3://b/imgs/x.png?endpoint_override=127.0.0.1:{listener.port}&scheme=http"
            "&region=us-east-1",
            f"s3://127.0.0.1:{listener.port}/imgs/x.png",
            "s3://k:s@b/imgs/x.png",
        ):
            r = client.post(
                "/v1/samples/uris", json={"items": [{"uri": uri}]}, headers=auth(keys.engineer)
            )
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "uri_refused"
        assert listener.connections == 0  # no HEAD, no GET, no signed request
    assert _n_samples(api_workspace) == before


def test_objects_under_a_root_are_read_from_the_configured_store(
    api_settings, api_workspace, keys, s3, make_png
):
    s3.put("bkt", "imgs/cat.png", make_png(301))
    s3.put("bkt", "other/dog.png", make_png(302))
    settings = _with_ingest(api_settings, uri_roots=[s3.root("bkt", "imgs")])
    with _client(settings) as client:
        r = client.post(
            "/v1/samples/uris",
            json={"items": [{"uri": "s3://bkt/imgs/cat.png"}, {"uri": "s3://bkt/imgs/none.png"}]},
            headers=auth(keys.engineer),
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["added"] == 1 and [x["reason"] for x in body["rejected"]] == ["not found"]
        (sid,) = body["sample_ids"]
        with api_workspace.db.session() as s:
            assert s.get(Sample, sid).original_name == "item 1: s3://bkt/imgs/cat.png"
        # Outside the root, even in the same bucket and on the same server: refused.
        r = client.post(
            "/v1/samples/uris",
            json={"items": [{"uri": "s3://bkt/other/dog.png"}]},
            headers=auth(keys.engineer),
        )
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["rule"] == "outside_roots"
        # App keys: refused unless the setting allows them.
        item = {"items": [{"uri": "s3://bkt/imgs/cat.png"}]}
        assert client.post("/v1/samples/uris", json=item, headers=auth(keys.app)).status_code == 403
    allowed = _with_ingest(settings, app_keys_may_register_uris=True)
    with _client(allowed) as client:
        r = client.post("/v1/samples/uris", json=item, headers=auth(keys.app))
        assert r.status_code == 201 and r.json()["duplicates"] == ["item 1: s3://bkt/imgs/cat.png"]


def test_no_roots_configured_refuses_every_uri(api_settings, api_workspace, keys):
    with _client(_with_ingest(api_settings, uri_roots=[])) as client:
        r = client.post(
            "/v1/samples/uris",
            json={"items": [{"uri": "s3://bkt/imgs/cat.png"}]},
            headers=auth(keys.engineer),
        )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["rule"] == "no_roots"


def test_remote_errors_are_not_echoed(api_settings, api_workspace, keys, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    port = refusing_port()
    root = f"s3://b/imgs?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    settings = _with_ingest(api_settings, uri_roots=[root], remote_attempts=1)
    with _client(settings) as client:
        r = client.post(
            "/v1/samples/uris",
            json={"items": [{"uri": "s3://b/imgs/x.png"}]},
            headers=auth(keys.engineer),
        )
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"name": "item 1: s3://b/imgs/x.png", "reason": "could not be read"}
    ]
    assert str(port) not in r.text and "127.0.0.1" not in r.text and "curl" not in r.text


def test_more_reads_than_the_queue_holds_get_503(api_settings, api_workspace, keys):
    settings = _with_ingest(api_settings, remote_queue=2)
    items = [{"uri": f"memory://flywheel-test/q/{i}.png"} for i in range(3)]
    with _client(settings) as client:
        r = client.post("/v1/samples/uris", json={"items": items}, headers=auth(keys.engineer))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "busy"
