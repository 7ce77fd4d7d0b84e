"""POST /v1/samples (files), POST /v1/samples/uris (blob URIs), GET a sample and its bytes."""

from __future__ import annotations

import uuid

import fsspec
from sqlalchemy import func, select

from flywheel.db import GroundTruth, Label, Sample
from tests.api.conftest import auth


def _post_files(client, token, files, **form):
    return client.post("/v1/samples", files=files, data=form, headers=auth(token))


def _counts(ws):
    with ws.db.session() as s:
        return (
            s.scalar(select(func.count()).select_from(Sample)),
            s.scalar(select(func.count()).select_from(Label)),
        )


def test_app_upload_goes_to_the_pool_and_reads_back(client, keys, make_png, api_workspace):
    a, b = make_png(101), make_png(102, fmt="JPEG")
    r = _post_files(
        client,
        keys.app,
        [
            ("files", ("a.png", a, "image/png")),
            ("files", ("b.jpg", b, "image/jpeg")),
            ("files", ("notes.txt", b"not an image", "text/plain")),
        ],
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["added"] == 2 and body["duplicates"] == []
    assert [x["name"] for x in body["rejected"]] == ["notes.txt"]
    assert "image" in body["rejected"][0]["reason"]
    ids = body["sample_ids"]
    assert len(ids) == 2
    with api_workspace.db.session() as s:
        rows = {r.id: r for r in s.scalars(select(Sample).where(Sample.id.in_(ids)))}
        labels = s.scalar(select(func.count()).select_from(Label).where(Label.sample_id.in_(ids)))
    assert {r.split for r in rows.values()} == {"pool"}
    assert {r.source for r in rows.values()} == {"upload:shop"}
    assert labels == 0  # an app's upload is unlabeled

    # Metadata and bytes, for the tenant that sent them (others: test_sample_tenancy.py).
    meta = client.get(f"/v1/samples/{ids[1]}", headers=auth(keys.app))
    assert meta.status_code == 200, meta.text
    assert meta.json()["format"] == "JPEG" and meta.json()["media_type"] == "image/jpeg"
    assert meta.json()["original_name"] == "b.jpg"
    assert (meta.json()["width"], meta.json()["size_bytes"]) == (8, len(b))
    img = client.get(f"/v1/samples/{ids[0]}/image", headers=auth(keys.app))
    assert img.status_code == 200
    assert img.headers["content-type"] == "image/png" and img.content == a

    # Same bytes again: a duplicate, stored once.
    again = _post_files(client, keys.app, [("files", ("again.png", a, "image/png"))])
    assert again.status_code == 201, again.text
    assert again.json()["added"] == 0 and again.json()["duplicates"] == ["again.png"]

    missing = "0" * 64
    for path in (f"/v1/samples/{missing}", f"/v1/samples/{missing}/image"):
        r = client.get(path, headers=auth(keys.app))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Only a sha256 is a sample id: anything else names no resource (and /uris is POST only).
    assert client.get("/v1/samples/not-a-sha", headers=auth(keys.app)).status_code == 404
    assert client.get("/v1/samples/uris", headers=auth(keys.app)).status_code == 405
    assert client.get(f"/v1/samples/{ids[0]}").status_code == 401
    assert client.get(f"/v1/samples/{ids[0]}/image", headers=auth(keys.revoked)).status_code == 401


def test_rejected_uploads_write_nothing(client, keys, make_png, api_workspace):
    before = _counts(api_workspace)
    junk = [("files", (f"j{i}.bin", bytes([i]) * 50, "application/octet-stream")) for i in range(2)]
    r = _post_files(client, keys.app, junk)
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_media"
    assert [d["name"] for d in r.json()["error"]["details"]] == ["j0.bin", "j1.bin"]

    truncated = make_png(7)[:60]  # a real PNG header, cut-off body: a bad image, not a 415
    r = _post_files(
        client,
        keys.app,
        [*junk[:1], ("files", ("broken.png", truncated, "image/png"))],
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    assert len(r.json()["error"]["details"]) == 2

    # Labels and splits are for engineers.
    png = [("files", ("x.png", make_png(8), "image/png"))]
    for form in ({"label": "3"}, {"split": "pool"}):
        r = _post_files(client, keys.app, png, **form)
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert _post_files(client, keys.engineer, png, split="nowhere").status_code == 422
    assert _post_files(client, keys.revoked, png).status_code == 401
    assert client.post("/v1/samples", files=png).status_code == 401
    assert _counts(api_workspace) == before


def test_engineer_labels_uploads_and_ingests_uris(client, keys, make_png, api_workspace):
    r = _post_files(
        client,
        keys.engineer,
        [("files", ("seven.png", make_png(20), "image/png"))],
        label="7",
        split="test",
    )
    assert r.status_code == 201, r.text
    (sid,) = r.json()["sample_ids"]
    with api_workspace.db.session() as s:
        sample = s.get(Sample, sid)
        label = s.scalars(select(Label).where(Label.sample_id == sid)).one()
    assert sample.split == "test" and sample.source == "upload:ml"
    assert (label.label, label.source) == ("7", "seed")

    # Blob URIs under the configured root are read; missing objects are listed as rejected.
    fs = fsspec.filesystem("memory")
    root = f"flywheel-test/{uuid.uuid4().hex}"  # under the test settings' uri_roots
    fs.pipe(f"/{root}/a.png", make_png(21))
    fs.pipe(f"/{root}/b.png", make_png(22))
    items = [
        {"uri": f"memory://{root}/a.png", "label": "2", "split": "pool"},
        {"uri": f"memory://{root}/b.png"},
        {"uri": f"memory://{root}/missing.png"},
    ]
    r = client.post("/v1/samples/uris", json={"items": items}, headers=auth(keys.engineer))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["added"] == 2 and len(body["sample_ids"]) == 2
    assert [x["reason"] for x in body["rejected"]] == ["not found"]
    with api_workspace.db.session() as s:
        hidden = s.get(GroundTruth, body["sample_ids"][0])
        splits = set(s.scalars(select(Sample.split).where(Sample.id.in_(body["sample_ids"]))))
    assert hidden is not None and hidden.label == "2"  # a pool sample's label is kept aside
    assert splits == {"pool"}

    # A refused URI fails the whole request, naming its rule, and nothing is written.
    before = _counts(api_workspace)
    for uri, rule in (
        ("file:///etc/passwd", "malformed"),
        ("ftp://example.com/x.png", "scheme_not_allowed"),
        (f"memory://elsewhere/{root}/c.png", "outside_roots"),
    ):
        bad = [{"uri": f"memory://{root}/c.png"}, {"uri": uri}]
        r = client.post("/v1/samples/uris", json={"items": bad}, headers=auth(keys.engineer))
        assert r.status_code == 422 and r.json()["error"]["code"] == "uri_refused", uri
        assert r.json()["error"]["details"] == [
            {"item": 2, "rule": rule, "reason": r.json()["error"]["details"][0]["reason"]}
        ]
    assert _counts(api_workspace) == before

    # App keys may not register URIs (ingest.app_keys_may_register_uris is off).
    r = client.post(
        "/v1/samples/uris", json={"items": [{"uri": items[1]["uri"]}]}, headers=auth(keys.app)
    )
    assert r.status_code == 403
    # Every object unreadable: 422.
    r = client.post("/v1/samples/uris", json={"items": items[2:]}, headers=auth(keys.engineer))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    for bad in (
        {"items": []},
        {"items": [{"uri": ""}]},
        {"items": [{"uri": "/etc/passwd"}]},  # not a URI at all
        {"items": [{"uri": "s3://x", "x": 1}]},
        {"items": [{"uri": "memory://a\x00b"}]},  # text PostgreSQL cannot store
    ):
        r = client.post("/v1/samples/uris", json=bad, headers=auth(keys.engineer))
        assert r.status_code == 422, bad
    assert client.post("/v1/samples/uris", json={"items": items}).status_code == 401
