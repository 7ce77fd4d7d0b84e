"""The UI's label filter and review decisions follow the API's text rule (issue 11,
section 6): control and invisible formatting characters get a 422 and change nothing."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from flywheel.db import Label, ReviewItem
from flywheel.workspace import Workspace
from tests.web.conftest import csrf_of, queue_items


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unsafe_labels_are_refused(engineer_client: TestClient, web_workspace: Workspace) -> None:
    [item] = queue_items(web_workspace, ["3"])
    headers = {"X-CSRF-Token": csrf_of(engineer_client)}
    for bad in ("\x1b[2J", "3\u202e", "3\u2028", "a\x00b"):
        assert engineer_client.get("/ui/review", params={"label": bad}).status_code == 422
        body = {"decision": "correct", "label": bad}
        r = engineer_client.post(f"/ui/review/{item.id}", json=body, headers=headers)
        assert r.status_code == 422, (bad, r.text)
    with web_workspace.db.session() as s:
        assert s.get(ReviewItem, item.id).state == "open"  # type: ignore[union-attr]
        assert s.scalars(select(Label).where(Label.sample_id == item.sample_id)).all() == []
    r = engineer_client.post(
        f"/ui/review/{item.id}", json={"decision": "correct", "label": "4"}, headers=headers
    )
    assert r.status_code == 200, r.text
