"""GET /v1/review (paged, filtered) and POST /v1/review/{id} (accept / reject)."""

from __future__ import annotations

from sqlalchemy import select

from flywheel.db import ReviewItem, Sample
from tests.api.conftest import auth


def _queue(ws, proposed: list[str]) -> tuple[list[int], list[str]]:
    """Open review items on pool samples, one per proposed label; their ids and samples."""
    with ws.db.session() as s:
        pool = s.scalars(
            select(Sample.id).where(Sample.split == "pool").order_by(Sample.id).limit(len(proposed))
        ).all()
        items = [
            ReviewItem(
                sample_id=sid,
                cycle_id=None,
                reason="uncertain",
                proposed_label=label,
                score=0.5,
                evidence={"why": "test"},
            )
            for sid, label in zip(pool, proposed, strict=True)
        ]
        s.add_all(items)
        s.flush()
        return [i.id for i in items], list(pool)


def test_review_queue_lists_filters_and_pages(client, keys, api_workspace):
    ids, samples = _queue(api_workspace, ["3", "5", "3"])
    eng = auth(keys.engineer)
    r = client.get("/v1/review", headers=eng)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 3 and [i["id"] for i in body["items"]] == ids
    first = body["items"][0]
    assert first["sample_id"] == samples[0] and first["state"] == "open"
    assert first["evidence"] == {"why": "test"} and first["reviewer"] is None

    threes = client.get("/v1/review?label=3", headers=eng).json()
    assert threes["total"] == 2 and [i["id"] for i in threes["items"]] == [ids[0], ids[2]]
    page = client.get("/v1/review?limit=1&offset=1", headers=eng).json()
    assert (page["total"], [i["id"] for i in page["items"]]) == (3, [ids[1]])
    assert client.get("/v1/review?state=accepted", headers=eng).json()["total"] == 0
    for query in ("limit=0", "limit=501", "offset=-1", "state=pending", "label=", "label=%00"):
        assert client.get(f"/v1/review?{query}", headers=eng).status_code == 422, query

    for method, path in (("GET", "/v1/review"), ("POST", f"/v1/review/{ids[0]}")):
        kwargs = {"json": {"decision": "reject"}} if method == "POST" else {}
        assert client.request(method, path, headers=auth(keys.app), **kwargs).status_code == 403
        assert client.request(method, path, headers=auth(keys.revoked), **kwargs).status_code == 401
        assert client.request(method, path, **kwargs).status_code == 401
    assert client.get("/v1/review", headers=eng).json()["total"] == 3  # nothing was decided


def test_review_queue_helpful_order_lets_classes_take_turns(client, keys, api_workspace):
    ids, _ = _queue(api_workspace, ["3", "3", "5"])
    eng = auth(keys.engineer)
    queued = client.get("/v1/review", headers=eng).json()
    assert [i["id"] for i in queued["items"]] == ids
    helpful = client.get("/v1/review?order=helpful", headers=eng).json()
    assert [i["id"] for i in helpful["items"]] == [ids[0], ids[2], ids[1]]
    assert helpful["total"] == 3
    assert client.get("/v1/review?order=random", headers=eng).status_code == 422


def test_decisions_write_human_labels(client, keys, api_workspace):
    ids, samples = _queue(api_workspace, ["3", "5", "3"])
    eng = auth(keys.engineer)

    r = client.post(f"/v1/review/{ids[0]}", json={"decision": "accept"}, headers=eng)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "accepted" and r.json()["decided_label"] == "3"
    assert r.json()["reviewer"].startswith("ml team [")  # the key's name by default
    again = client.post(f"/v1/review/{ids[0]}", json={"decision": "reject"}, headers=eng)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    bad = {"decision": "accept", "label": "cat"}
    r = client.post(f"/v1/review/{ids[1]}", json=bad, headers=eng)
    assert r.status_code == 422 and "label set" in r.json()["error"]["message"]
    fix = {"decision": "accept", "label": "4", "reviewer": "alice"}
    r = client.post(f"/v1/review/{ids[1]}", json=fix, headers=eng)
    assert r.status_code == 200 and (r.json()["decided_label"], r.json()["reviewer"]) == (
        "4",
        "alice",
    )

    r = client.post(f"/v1/review/{ids[2]}", json={"decision": "reject", "label": "3"}, headers=eng)
    assert r.status_code == 422
    r = client.post(f"/v1/review/{ids[2]}", json={"decision": "reject"}, headers=eng)
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    assert r.json()["decided_label"] is None

    r = client.post("/v1/review/999999", json={"decision": "accept"}, headers=eng)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for path, body in (
        ("/v1/review/0", {"decision": "accept"}),
        (f"/v1/review/{2**31}", {"decision": "accept"}),
        (f"/v1/review/{ids[0]}", {"decision": "maybe"}),
        (f"/v1/review/{ids[0]}", {"decision": "accept", "extra": 1}),
        (f"/v1/review/{ids[0]}", {"decision": "accept", "reviewer": "x" * 201}),
        (f"/v1/review/{ids[0]}", {"decision": "accept", "reviewer": "a\x00b"}),  # PostgreSQL
    ):
        assert client.post(path, json=body, headers=eng).status_code == 422, (path, body)

    accepted = client.get("/v1/review?state=accepted", headers=eng).json()
    assert [i["id"] for i in accepted["items"]] == ids[:2]

    # The accepted labels are human labels of the next dataset version; the rejected is not.
    _, table = api_workspace.versions.read(api_workspace.versions.snapshot("reviewed")[0].id)
    rows = {r["sample_id"]: r for r in table.to_pylist() if r["sample_id"] in samples}
    assert set(rows) == set(samples[:2])
    assert (rows[samples[0]]["label"], rows[samples[0]]["source"]) == ("3", "human")
    assert (rows[samples[1]]["label"], rows[samples[1]]["annotator"]) == ("4", "alice")
