"""The web UI without a browser: sessions, CSRF, decisions, paging, thumbnails, caching."""

from __future__ import annotations

import io
import os
import re
import stat
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from api.app import create_app
from api.web.pages.model_cards import champion_version, run_link
from api.web.pages.review import label_shortcuts
from api.web.session import COOKIE, SECRET_FILE, SessionSigner
from flywheel.config import Settings
from flywheel.db import ReviewItem, Sample
from flywheel.serve.api_keys import revoke_key
from flywheel.workspace import Workspace
from tests.web.conftest import UiKeys, csrf_of, log_in, queue_items, set_session_cookie

# Session and CSRF handling does not depend on the database: SQLite only. What reads or
# writes queue, labels and versions runs on both databases.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PAGES = ["/ui/", "/ui/review", "/ui/audit", "/ui/datasets/diff?a=latest&b=latest"]


def _session_cookie(client: TestClient) -> str:
    return client.cookies.get(COOKIE, path="/ui") or ""


# --- login and sessions ----------------------------------------------------------------------
@SQLITE_ONLY
@pytest.mark.parametrize("path", PAGES)
def test_pages_without_a_session_redirect_to_login(web_client: TestClient, path: str) -> None:
    r = web_client.get(path, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login?reason=login")
    login = web_client.get(r.headers["location"])
    assert login.status_code == 200 and 'name="key"' in login.text
    assert "Log in with an engineer key" in login.text


@SQLITE_ONLY
def test_fetches_without_a_session_get_401_json(web_client: TestClient) -> None:
    r = web_client.post("/ui/review/1", json={"decision": "accept"}, headers={"X-CSRF-Token": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "login_required"


@SQLITE_ONLY
@pytest.mark.parametrize("bad", ["", "fw_unknown_secret", "not-a-key"])
def test_wrong_or_missing_key_goes_back_to_login(
    web_client: TestClient, ui_keys: UiKeys, bad: str
) -> None:
    r = log_in(web_client, bad)
    assert r.status_code == 303 and "reason=bad_key" in r.headers["location"]
    assert not _session_cookie(web_client)
    assert "Unknown, malformed or revoked key" in web_client.get(r.headers["location"]).text
    assert web_client.get("/ui/", follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_revoked_key_cannot_log_in(web_client: TestClient, ui_keys: UiKeys) -> None:
    r = log_in(web_client, ui_keys.revoked)
    assert r.status_code == 303 and "reason=bad_key" in r.headers["location"]
    assert not _session_cookie(web_client)


@SQLITE_ONLY
def test_app_key_gets_the_login_page_with_403(web_client: TestClient, ui_keys: UiKeys) -> None:
    r = log_in(web_client, ui_keys.app)
    assert r.status_code == 403
    assert "Engineer key required" in r.text and 'name="key"' in r.text
    assert not _session_cookie(web_client)
    for path in PAGES:
        assert web_client.get(path, follow_redirects=False).status_code == 303, path


@SQLITE_ONLY
def test_login_form_token_is_required(web_client: TestClient, ui_keys: UiKeys) -> None:
    """Login CSRF: a form posted from elsewhere has no matching login cookie."""
    r = web_client.post(
        "/ui/login",
        data={"key": ui_keys.engineer, "login_token": "forged", "next": "/ui/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "reason=stale_form" in r.headers["location"]
    assert not _session_cookie(web_client)


@SQLITE_ONLY
def test_engineer_login_sets_a_strict_http_only_cookie(
    web_client: TestClient, ui_keys: UiKeys
) -> None:
    r = log_in(web_client, ui_keys.engineer, next_="/ui/review?label=3")
    assert r.status_code == 303 and r.headers["location"] == "/ui/review?label=3"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attrs and "secure" not in attrs  # plain http
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    page = web_client.get("/ui/")
    assert page.status_code == 200 and "ml team" in page.text
    assert page.headers["cache-control"] == "no-store"


@SQLITE_ONLY
@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/ui", "/v1/models", "/uinstall", "/ui\\x"]
)
def test_login_never_redirects_outside_the_ui(
    web_client: TestClient, ui_keys: UiKeys, target: str
) -> None:
    r = log_in(web_client, ui_keys.engineer, next_=target)
    assert r.status_code == 303 and r.headers["location"] == "/ui/"


@SQLITE_ONLY
def test_tampered_and_expired_cookies_are_refused(
    engineer_client: TestClient, web_settings: Settings
) -> None:
    good = _session_cookie(engineer_client)
    payload, signature = good.split(".")
    for bad in (f"{payload}.{'0' * len(signature)}", f"{payload}x.{signature}", "garbage"):
        set_session_cookie(engineer_client, bad)
        r = engineer_client.get("/ui/", follow_redirects=False)
        assert r.status_code == 303 and "reason=expired" in r.headers["location"], bad
    engineer_client.cookies.clear()
    raw = {"Cookie": f"{COOKIE}={payload}.".encode() + b"\xe9"}  # not ASCII: a 303, not a 500
    assert engineer_client.get("/ui/", headers=raw, follow_redirects=False).status_code == 303
    secret = (web_settings.data_dir / SECRET_FILE).read_bytes().strip()
    lifetime = web_settings.web.session_hours * 3600  # a shorter one refuses longer cookies
    key_id = SessionSigner(secret, lifetime).verify(good)[0]  # type: ignore[index]
    expired = SessionSigner(secret, 60).issue(key_id, now=0.0)
    set_session_cookie(engineer_client, expired)
    r = engineer_client.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and "reason=expired" in r.headers["location"]
    set_session_cookie(engineer_client, good)
    assert engineer_client.get("/ui/", follow_redirects=False).status_code == 200


@SQLITE_ONLY
def test_revoking_the_key_ends_its_session(
    engineer_client: TestClient, ui_keys: UiKeys, web_workspace: Workspace
) -> None:
    assert engineer_client.get("/ui/", follow_redirects=False).status_code == 200
    revoke_key(web_workspace.db, ui_keys.engineer.split("_")[1])
    r = engineer_client.get("/ui/review", follow_redirects=False)
    assert r.status_code == 303 and "reason=revoked" in r.headers["location"]
    assert "revoked" in engineer_client.get(r.headers["location"]).text


@SQLITE_ONLY
def test_logout_needs_csrf_and_ends_the_session(engineer_client: TestClient) -> None:
    refused = engineer_client.post("/ui/logout", data={"csrf": "nope"}, follow_redirects=False)
    assert refused.status_code == 403
    assert engineer_client.get("/ui/", follow_redirects=False).status_code == 200
    csrf = csrf_of(engineer_client)
    r = engineer_client.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert "Logged out." in engineer_client.get(r.headers["location"]).text
    assert engineer_client.get("/ui/", follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_session_secret_is_kept_private_and_survives_a_restart(
    engineer_client: TestClient, web_settings: Settings
) -> None:
    path = web_settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cookie = _session_cookie(engineer_client)
    with TestClient(create_app(web_settings)) as again:  # a restarted server, same data dir
        set_session_cookie(again, cookie)
        assert again.get("/ui/", follow_redirects=False).status_code == 200
    other = web_settings.model_copy(
        update={"web": web_settings.web.model_copy(update={"session_secret": "x" * 40})}
    )
    with TestClient(create_app(other)) as configured:  # another secret: the cookie is void
        set_session_cookie(configured, cookie)
        assert configured.get("/ui/", follow_redirects=False).status_code == 303


# --- review decisions ------------------------------------------------------------------------
def _decide(client: TestClient, item_id: int, csrf: str | bytes | None, **body: object):  # type: ignore[no-untyped-def]
    headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
    return client.post(f"/ui/review/{item_id}", json=body, headers=headers)


@SQLITE_ONLY
def test_decisions_need_the_sessions_csrf_token(
    engineer_client: TestClient, web_workspace: Workspace
) -> None:
    (item,) = queue_items(web_workspace, ["3"])
    for token in (None, "", "forged", b"f\xf6rged"):  # not ASCII: a 403, not a 500
        r = _decide(engineer_client, item.id, token, decision="accept")
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf", token
    with web_workspace.db.session() as s:
        assert s.get(ReviewItem, item.id).state == "open"  # nothing was decided


def test_decisions_write_human_labels_into_the_next_version(
    engineer_client: TestClient, web_workspace: Workspace
) -> None:
    items = queue_items(web_workspace, ["3", "5", "7", "1"])
    csrf = csrf_of(engineer_client)
    accepted = _decide(engineer_client, items[0].id, csrf, decision="accept")
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "accepted" and accepted.json()["decided_label"] == "3"
    assert accepted.json()["reviewer"].startswith("ml team [")
    corrected = _decide(engineer_client, items[1].id, csrf, decision="correct", label="6")
    assert corrected.json()["decided_label"] == "6"
    rejected = _decide(engineer_client, items[2].id, csrf, decision="reject")
    assert rejected.json()["state"] == "rejected"

    again = _decide(engineer_client, items[0].id, csrf, decision="reject")
    assert again.status_code == 409
    assert _decide(engineer_client, 987654, csrf, decision="accept").status_code == 404
    bad = _decide(engineer_client, items[3].id, csrf, decision="correct", label="cat")
    assert bad.status_code == 422 and "label set" in bad.json()["error"]["message"]
    assert _decide(engineer_client, items[3].id, csrf, decision="correct").status_code == 422
    assert _decide(engineer_client, items[3].id, csrf, decision="maybe").status_code == 422

    _, table = web_workspace.versions.read(web_workspace.versions.snapshot("review")[0].id)
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert (rows[items[0].sample_id]["label"], rows[items[0].sample_id]["source"]) == (
        "3",
        "human",
    )
    assert (rows[items[1].sample_id]["label"], rows[items[1].sample_id]["source"]) == (
        "6",
        "human",
    )
    assert rows[items[0].sample_id]["annotator"].startswith("ml team [")
    assert rows[items[0].sample_id]["method"] == "review"
    assert items[2].sample_id not in rows  # rejected: no label


# --- review page -----------------------------------------------------------------------------
def test_review_page_pages_filters_and_shows_evidence(
    engineer_client: TestClient, web_workspace: Workspace, web_settings: Settings
) -> None:
    per_page = web_settings.web.page_size
    labels = [str(i % 3) for i in range(per_page + 5)]  # 0, 1, 2, 0, ...
    items = queue_items(web_workspace, labels)
    first = engineer_client.get("/ui/review")
    assert first.status_code == 200
    assert first.text.count('class="detail"') == per_page
    assert f"{len(items)} open" in first.text
    assert f"offset={per_page}" in first.text  # a next page
    assert "model probability" in first.text and "41.0 %" in first.text
    assert first.text.count("Nearest labeled neighbours") == per_page
    second = engineer_client.get(f"/ui/review?offset={per_page}")
    assert second.text.count('class="detail"') == 5
    detail_ids = re.compile(r'<article class="detail"[^>]* data-id="(\d+)"')
    ids = [int(i) for page in (first, second) for i in detail_ids.findall(page.text)]
    assert sorted(ids) == sorted(i.id for i in items)  # every item once across the pages

    only_two = engineer_client.get("/ui/review?label=2")
    shown = re.findall(r'data-proposed="([^"]*)"', only_two.text)
    assert shown and set(shown) == {"2"} and len(shown) == labels.count("2")
    past = engineer_client.get("/ui/review?offset=500")
    assert past.status_code == 200 and "Nothing to review" in past.text
    assert engineer_client.get("/ui/review?offset=-1").status_code == 422


def test_label_shortcuts_keep_digit_labels_and_number_the_rest() -> None:
    assert label_shortcuts(["0", "1", "9"]) == [("0", "0"), ("1", "1"), ("9", "9")]
    assert label_shortcuts(["cat", "dog", "1"]) == [("cat", "2"), ("dog", "3"), ("1", "1")]
    many = label_shortcuts([f"c{i:02d}" for i in range(12)])
    assert [k for _, k in many][:10] == list("1234567890") and many[10][1] is None


# --- thumbnails --------------------------------------------------------------------------------
@SQLITE_ONLY
def test_thumbnails_are_upscaled_crisp_and_cached(
    engineer_client: TestClient, web_workspace: Workspace
) -> None:
    with web_workspace.db.session() as s:
        sid = s.scalars(select(Sample.id).limit(1)).one()
    r = engineer_client.get(f"/ui/thumb/{sid}?size=96")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["etag"] == f'"{sid}"'
    assert r.headers["cache-control"].startswith("private, max-age=")
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (96, 96)  # 8x8 digits, 12x each way
    block = img.crop((0, 0, 12, 12)).getcolors()
    assert block is not None and len(block) == 1  # nearest neighbour: one colour per pixel
    cached = engineer_client.get(f"/ui/thumb/{sid}?size=96", headers={"If-None-Match": f'"{sid}"'})
    assert cached.status_code == 304 and not cached.content
    web = engineer_client.app.state.ctx.extras["web"]  # type: ignore[attr-defined]
    assert web.thumbnails.get((sid, 96)) == r.content  # served from memory from now on

    assert engineer_client.get(f"/ui/thumb/{'f' * 64}").status_code == 404
    assert engineer_client.get("/ui/thumb/not-a-sha").status_code == 422
    assert engineer_client.get(f"/ui/thumb/{sid}?size=5000").status_code == 422
    engineer_client.cookies.clear()
    assert engineer_client.get(f"/ui/thumb/{sid}", follow_redirects=False).status_code == 303


# --- dashboard, diff, audit --------------------------------------------------------------------
def test_dashboard_lists_versions_and_diffs_them(
    engineer_client: TestClient, web_workspace: Workspace
) -> None:
    first, _ = web_workspace.versions.snapshot("seed")
    (item,) = queue_items(web_workspace, ["4"])
    csrf = csrf_of(engineer_client)
    assert _decide(engineer_client, item.id, csrf, decision="accept").status_code == 200
    second, _ = web_workspace.versions.snapshot("after review")
    page = engineer_client.get("/ui/")
    assert page.status_code == 200
    assert first.id[:12] in page.text and second.id[:12] in page.text
    assert "No cycles yet" in page.text
    assert "Champion and challenger" in page.text and "model v1" in page.text
    assert "mlflow ui --backend-store-uri sqlite:///" in page.text  # a local MLflow store
    diff = engineer_client.get(f"/ui/datasets/diff?a={first.id[:8]}&b={second.id[:8]}")
    assert diff.status_code == 200
    added = re.search(r'data-kind="added">(\d+)<', diff.text)
    assert added and int(added.group(1)) == 1  # the reviewed pool sample is new in b
    assert item.sample_id in diff.text  # its thumbnail
    missing = engineer_client.get("/ui/datasets/diff?a=abcd1234&b=latest")
    assert missing.status_code == 404 and "no dataset version" in missing.text
    assert engineer_client.get("/ui/datasets/diff?a=x&b=latest").status_code == 422


@SQLITE_ONLY
def test_cycle_and_drift_buttons_need_csrf_and_report_back(engineer_client: TestClient) -> None:
    assert engineer_client.post("/ui/cycles", data={"trigger": "manual"}).status_code == 403
    csrf = csrf_of(engineer_client)
    r = engineer_client.post(
        "/ui/cycles", data={"csrf": csrf, "trigger": "manual"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    page = engineer_client.get("/ui/").text
    assert "No cycle started: cycles are off in this server." in page
    assert "No cycle started" not in engineer_client.get("/ui/").text  # shown once
    r = engineer_client.post("/ui/drift/check", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert "Drift checked." in engineer_client.get(r.headers["location"]).text


def test_mlflow_links_open_a_tracking_server_or_say_how_to_open_a_local_store() -> None:
    server = run_link("http://mlflow:5000/", "7", "abc", "http://mlflow:5000/")
    assert (server.url, server.command) == ("http://mlflow:5000/#/experiments/7/runs/abc", None)
    local = run_link("sqlite:////srv/mlflow.db", None, "abc", "sqlite:////srv/mlflow.db")
    assert local.url is None
    assert local.command == "mlflow ui --backend-store-uri sqlite:////srv/mlflow.db"


@SQLITE_ONLY
def test_drift_panel_offers_a_cycle_only_when_drifted(engineer_client: TestClient) -> None:
    from flywheel.insights.drift import DriftReport

    page = engineer_client.get("/ui/").text
    assert "Drift watch" in page and 'name="trigger" value="drift"' not in page
    ctx = engineer_client.app.state.ctx  # type: ignore[attr-defined]
    web = ctx.extras["web"]
    drifted = DriftReport(
        recent=80,
        reference=400,
        mmd=0.05,
        p_value=0.005,
        knn_ratio=1.8,
        drifted=True,
        threshold=0.01,
        model_version="1",
        computed_at=datetime.now(UTC),
    )
    # The result a drift check of this champion would have cached (no cycle has run yet).
    web.memo.get("drift", (champion_version(ctx, web), None), lambda: drifted, force=True)
    page = engineer_client.get("/ui/").text
    assert "Drift: recent inputs differ from the training data" in page
    assert 'name="trigger" value="drift"' in page  # the "start a cycle" button


@SQLITE_ONLY
def test_audit_page_before_any_cycle(engineer_client: TestClient) -> None:
    page = engineer_client.get("/ui/audit")
    assert page.status_code == 200
    assert "Likely wrong labels" in page.text and "No feedback from users yet" in page.text
    assert "Nothing audited yet" in page.text or "not available yet" in page.text


@SQLITE_ONLY
def test_pages_send_a_strict_content_security_policy(engineer_client: TestClient) -> None:
    for path in ("/ui/", "/ui/review", "/ui/audit", "/ui/login"):
        csp = engineer_client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
    page = engineer_client.get("/ui/review").text
    assert " onchange=" not in page and " onclick=" not in page  # no inline script to allow


@SQLITE_ONLY
def test_ui_is_not_in_the_openapi_document(web_client: TestClient) -> None:
    paths = web_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]
