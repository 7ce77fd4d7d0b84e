"""Web UI fixtures: the real app over a real workspace, and a logged-in TestClient."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.web.session import COOKIE
from flywheel.config import Settings
from flywheel.db import ReviewItem, Sample
from flywheel.serve.api_keys import create_key, revoke_key
from flywheel.workspace import Workspace, open_workspace
from tests.api.conftest import ModelStore, add_digits, api_settings_for, model_store

__all__ = ["model_store"]  # the API tests' session fixture (two registered models)


@dataclass(frozen=True)
class UiKeys:
    engineer: str
    app: str
    revoked: str


@pytest.fixture
def web_settings(tmp_path: Path, db_url: str, model_store: ModelStore) -> Settings:
    # No in-process cycles: a test pressing "start a cycle" must not start real training.
    return api_settings_for(tmp_path / "data", db_url, model_store, run_cycles_in_process=False)


@pytest.fixture
def web_workspace(web_settings: Settings) -> Iterator[Workspace]:
    """100 real digits (3 seed labels per class, 20 % test, the rest pool)."""
    ws = open_workspace(web_settings)
    add_digits(ws, 100)
    yield ws
    ws.close()


@pytest.fixture
def ui_keys(web_workspace: Workspace) -> UiKeys:
    db = web_workspace.db
    revoked_info, revoked = create_key(db, "engineer", "ml", "gone")
    revoke_key(db, revoked_info.id)
    return UiKeys(
        engineer=create_key(db, "engineer", "ml", "ml team")[1],
        app=create_key(db, "app", "shop", "shop app")[1],
        revoked=revoked,
    )


@pytest.fixture
def web_client(web_settings: Settings, web_workspace: Workspace) -> Iterator[TestClient]:
    """Not logged in. https base URL off: cookies are sent over plain http, as in a browser
    talking to a local server."""
    with TestClient(create_app(web_settings), raise_server_exceptions=False) as c:
        yield c


def login_token(client: TestClient) -> str:
    page = client.get("/ui/login")
    found = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def log_in(client: TestClient, key: str, next_: str = "/ui/"):  # type: ignore[no-untyped-def]
    """POST the login form the way a browser does (token from the form, cookie kept)."""
    return client.post(
        "/ui/login",
        data={"key": key, "login_token": login_token(client), "next": next_},
        follow_redirects=False,
    )


@pytest.fixture
def engineer_client(web_client: TestClient, ui_keys: UiKeys) -> TestClient:
    r = log_in(web_client, ui_keys.engineer)
    assert r.status_code == 303, r.text
    return web_client


def set_session_cookie(client: TestClient, value: str) -> None:
    """Make ``value`` the one session cookie the client sends. The one the server set is
    dropped first: a client's jar may keep both (they differ by domain), and then which one
    the server reads is the client library's choice."""
    client.cookies.delete(COOKIE)
    client.cookies.set(COOKIE, value, path="/ui")


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui/").text)
    assert found
    return found.group(1)


def queue_items(ws: Workspace, proposed: list[str], reason: str = "uncertain") -> list[ReviewItem]:
    """Open review items on pool samples, one per proposed label (in id order)."""
    with ws.db.session() as s:
        pool = s.scalars(
            select(Sample.id).where(Sample.split == "pool").order_by(Sample.id).limit(len(proposed))
        ).all()
        assert len(pool) == len(proposed)
        neighbours = s.scalars(
            select(Sample.id).where(Sample.split == "train").order_by(Sample.id).limit(3)
        ).all()
        items = [
            ReviewItem(
                sample_id=sid,
                cycle_id=None,
                reason=reason,
                proposed_label=label,
                score=0.3 + 0.01 * i,
                evidence={
                    "classifier_prob": 0.41,
                    "knn_share": 0.6,
                    "threshold": 0.9,
                    "neighbors": [[n, 0.9 - 0.1 * j] for j, n in enumerate(neighbours)],
                },
            )
            for i, (sid, label) in enumerate(zip(pool, proposed, strict=True))
        ]
        s.add_all(items)
        s.flush()
        for item in items:
            s.expunge(item)
    return items
