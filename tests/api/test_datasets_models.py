"""Dataset versions (list, resolve, diff, download) and the model registry (list, promote,
rollback)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from flywheel.db import Label, Sample
from tests.api.conftest import auth


def _human_labels(ws) -> tuple[str, str]:
    """Label one pool sample "3" and relabel one seed sample: a new version's changes."""
    with ws.db.session() as s:
        pool = s.scalars(
            select(Sample.id).where(Sample.split == "pool").order_by(Sample.id)
        ).first()
        seed = s.scalars(
            select(Label).where(Label.source == "seed", Label.label != "9").order_by(Label.id)
        ).first()
        s.add(Label(sample_id=pool, label="3", source="human", method="test"))
        s.add(
            Label(
                sample_id=seed.sample_id,
                label="9",
                source="human",
                method="test",
                supersedes_id=seed.id,
            )
        )
        return pool, f"{seed.label} -> 9"


def test_dataset_versions_list_resolve_and_diff(client, keys, api_workspace):
    eng = auth(keys.engineer)
    empty = client.get("/v1/datasets/versions", headers=eng)
    assert empty.status_code == 200 and empty.json()["total"] == 0
    assert client.get("/v1/datasets/versions/latest", headers=eng).status_code == 404

    v1, _ = api_workspace.versions.snapshot("seed labels")
    _, relabel = _human_labels(api_workspace)
    v2, _ = api_workspace.versions.snapshot("reviewed")

    page = client.get("/v1/datasets/versions", headers=eng).json()
    assert page["total"] == 2
    assert [v["id"] for v in page["items"]] == [v2.id, v1.id]  # newest first
    assert page["items"][0]["parent_id"] == v1.id and page["items"][0]["message"] == "reviewed"
    assert page["items"][1]["stats"]["by_source"] == {"seed": v1.num_rows}
    page = client.get("/v1/datasets/versions?limit=1&offset=1", headers=eng).json()
    assert [v["id"] for v in page["items"]] == [v1.id]

    latest = client.get("/v1/datasets/versions/latest", headers=eng)
    assert latest.status_code == 200 and latest.json()["id"] == v2.id
    assert latest.json()["num_rows"] == v1.num_rows + 1
    by_prefix = client.get(f"/v1/datasets/versions/{v1.id[:8]}", headers=eng)
    assert by_prefix.status_code == 200 and by_prefix.json()["id"] == v1.id
    # A full id that matches neither version.
    unknown = next(c * 64 for c in "0123456789abcdef" if c not in (v1.id[0], v2.id[0]))
    r = client.get(f"/v1/datasets/versions/{unknown}", headers=eng)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for ref in ("abc", "LATEST", "zzzz", "a" * 65, "ab%25"):
        assert client.get(f"/v1/datasets/versions/{ref}", headers=eng).status_code == 422, ref

    d = client.get(f"/v1/datasets/diff?a={v1.id[:6]}&b=latest", headers=eng)
    assert d.status_code == 200, d.text
    body = d.json()
    assert (body["a"], body["b"]) == (v1.id, v2.id)
    assert body["counts"] == {"added": 1, "removed": 0, "relabeled": 1, "reattributed": 0}
    assert body["summary"] == [
        {"change": "added", "label": "3", "source": "human", "count": 1},
        {"change": "relabeled", "label": relabel, "source": "human", "count": 1},
    ]
    back = client.get(f"/v1/datasets/diff?a={v2.id}&b={v1.id}", headers=eng).json()
    assert back["counts"]["removed"] == 1
    assert client.get(f"/v1/datasets/diff?a={unknown}&b=latest", headers=eng).status_code == 404
    assert client.get("/v1/datasets/diff?a=latest", headers=eng).status_code == 422

    # A manifest changed after publishing is refused (409), never served.
    manifest = Path(api_workspace.settings.storage_root) / "versions" / f"{v1.id}.parquet"
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes() + b"tampered")
    r = client.get(f"/v1/datasets/diff?a={v1.id}&b={v2.id}", headers=eng)
    assert r.status_code == 409 and "checksum" in r.json()["error"]["message"]

    for path in ("/v1/datasets/versions", "/v1/datasets/versions/latest", "/v1/datasets/diff"):
        assert client.get(path, headers=auth(keys.app)).status_code == 403
        assert client.get(path, headers=auth(keys.revoked)).status_code == 401
        assert client.get(path).status_code == 401


def _predicted_version(client: TestClient, token: str, png: bytes) -> str:
    r = client.post("/v1/predict", files={"file": ("x.png", png, "image/png")}, headers=auth(token))
    assert r.status_code == 201, r.text
    return r.json()["model_version"]


def test_a_version_downloads_in_each_export_layout(client, keys, api_workspace):
    eng = auth(keys.engineer)
    version, _ = api_workspace.versions.snapshot("seed labels")
    url = f"/v1/datasets/versions/{version.id[:8]}/export"
    r = client.get(url, headers=eng)  # the manifest, as Parquet by default
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == version.num_rows and "model_version" in table.column_names
    csv = client.get(f"{url}?format=csv", headers=eng)
    assert csv.status_code == 200 and csv.text.startswith('"sample_id"')
    for fmt, suffix in (("imagefolder", ".png"), ("hf", ".parquet")):
        r = client.get(f"{url}?format={fmt}", headers=eng)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip", fmt
        assert f"{version.id[:12]}-{fmt}.zip" in r.headers["content-disposition"]
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        images = [n for n in names if n.endswith(suffix)]
        assert images and all(not n.startswith(("/", "..")) for n in names), fmt
    assert len([n for n in names if n.startswith("data/train-")]) == 1  # the hf shards
    assert client.get(f"{url}?format=tfrecord", headers=eng).status_code == 422
    assert client.get("/v1/datasets/versions/abcd/export", headers=eng).status_code == 404
    assert client.get(url, headers=auth(keys.app)).status_code == 403
    assert client.get(url).status_code == 401


def test_an_export_of_a_lost_image_is_a_conflict(client, keys, api_workspace):
    version, _ = api_workspace.versions.snapshot("seed labels")
    _, table = api_workspace.versions.read(version.id)
    api_workspace.blobs.delete(table["sample_id"][0].as_py())
    url = f"/v1/datasets/versions/{version.id[:8]}/export?format=imagefolder"
    r = client.get(url, headers=auth(keys.engineer))
    assert r.status_code == 409 and "blob missing from the store" in r.text, r.text
    # The manifest itself is still served: it names the sample, it does not read it.
    parquet = client.get(url.replace("imagefolder", "parquet"), headers=auth(keys.engineer))
    assert parquet.status_code == 200


def test_models_promote_and_rollback_switch_predictions(
    api_settings, api_workspace, keys, make_png
):
    # The champion is normally re-checked only every hour here: a switch seen at once
    # proves the routes invalidate the cache.
    settings = api_settings.model_copy(
        update={"api": api_settings.api.model_copy(update={"champion_refresh_seconds": 3600})}
    )
    eng, png = auth(keys.engineer), make_png(3)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        listed = client.get("/v1/models", headers=eng)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert body["champion"] == "1"
        assert [(m["version"], m["is_champion"]) for m in body["versions"]] == [
            ("2", False),
            ("1", True),
        ]
        assert body["versions"][0]["aliases"] == ["challenger"]
        assert body["versions"][1]["aliases"] == ["champion"]
        assert body["versions"][1]["tags"]["classes"] == ",".join(str(d) for d in range(10))
        assert _predicted_version(client, keys.app, png) == "1"

        r = client.post("/v1/models/2/promote", json={"reason": "looks better"}, headers=eng)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "2" and r.json()["is_champion"]
        assert r.json()["tags"]["flywheel.promoted_because"] == "looks better"
        assert _predicted_version(client, keys.app, png) == "2"

        again = client.post("/v1/models/challenger/promote", headers=eng)
        assert again.status_code == 409 and "already the champion" in again.text
        for ref in ("99", "no-such-alias"):
            r = client.post(f"/v1/models/{ref}/promote", headers=eng)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", ref
        for ref in ("1234567890", "-1", "a.b"):
            assert client.post(f"/v1/models/{ref}/promote", headers=eng).status_code == 422
        r = client.post("/v1/models/1/promote", json={"reason": ""}, headers=eng)
        assert r.status_code == 422

        back = client.post("/v1/models/rollback", headers=eng)
        assert back.status_code == 200 and back.json()["version"] == "1"
        # These models record no dataset version: the labels are left as they are.
        assert back.json()["labels"] is None
        assert _predicted_version(client, keys.app, png) == "1"
        none_left = client.post("/v1/models/rollback", headers=eng)
        assert none_left.status_code == 409 and none_left.json()["error"]["code"] == "conflict"

        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/models/2/promote"),
            ("POST", "/v1/models/rollback"),
        ):
            assert client.request(method, path, headers=auth(keys.app)).status_code == 403
            assert client.request(method, path, headers=auth(keys.revoked)).status_code == 401
            assert client.request(method, path).status_code == 401
        assert client.get("/v1/models", headers=eng).json()["champion"] == "1"
