"""GET /v1/quarantine and DELETE /v1/quarantine/{sample_id}: engineers only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from flywheel.db import Sample
from flywheel.store.quarantine import list_quarantine, record
from flywheel.workspace import Workspace
from tests.api.conftest import Keys, auth


def quarantine_two(ws: Workspace) -> list[str]:
    with ws.db.session() as s:
        ids = list(s.scalars(select(Sample.id).order_by(Sample.id).limit(2)))
    record(ws.db, {ids[0]: "blob missing from the store"}, 3)
    record(ws.db, {ids[1]: "undecodable image: OSError: truncated"}, 4)
    return ids


def test_engineers_page_through_and_release(
    client: TestClient, keys: Keys, api_workspace: Workspace
) -> None:
    ids = quarantine_two(api_workspace)
    eng = auth(keys.engineer)
    r = client.get("/v1/quarantine", headers=eng)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    by_id = {q["sample_id"]: q for q in body["items"]}
    assert by_id[ids[0]]["reason"] == "blob missing from the store"
    assert by_id[ids[0]]["cycle_id"] == 3 and by_id[ids[1]]["cycle_id"] == 4
    assert all(q["created_at"] for q in body["items"])
    page = client.get("/v1/quarantine?limit=1&offset=1", headers=eng).json()
    assert page["total"] == 2 and len(page["items"]) == 1

    r = client.delete(f"/v1/quarantine/{ids[0]}", headers=eng)
    assert r.status_code == 200 and r.json()["sample_id"] == ids[0]
    assert [q.sample_id for q in list_quarantine(api_workspace.db)[0]] == [ids[1]]
    again = client.delete(f"/v1/quarantine/{ids[0]}", headers=eng)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert client.delete("/v1/quarantine/not-a-sha", headers=eng).status_code == 422
    assert client.get("/v1/quarantine?limit=0", headers=eng).status_code == 422


def test_app_keys_are_refused_and_change_nothing(
    client: TestClient, keys: Keys, api_workspace: Workspace
) -> None:
    ids = quarantine_two(api_workspace)
    app = auth(keys.app)
    assert client.get("/v1/quarantine", headers=app).status_code == 403
    assert client.delete(f"/v1/quarantine/{ids[0]}", headers=app).status_code == 403
    assert client.get("/v1/quarantine").status_code == 401
    assert list_quarantine(api_workspace.db)[1] == 2
