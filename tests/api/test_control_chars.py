"""Ids, labels, names and keys from clients carry no control or invisible text-reordering
characters (issue 11, section 6): one rule (flywheel/text.py), a 422 everywhere, nothing
written."""

from __future__ import annotations

import re
import unicodedata

import pytest
from sqlalchemy import func, select

from api.schemas import SAFE_TEXT
from flywheel.db import Feedback, Label, ReviewItem, Sample
from flywheel.errors import InvalidInputError
from flywheel.serve.api_keys import create_key
from flywheel.text import is_safe_text, printable, replace_unsafe
from tests.api.conftest import auth

# The rule does not depend on the database (PostgreSQL's NUL is covered by it too).
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

UNSAFE = [
    "\x1b[31mred",  # ANSI colour
    "\x1b]0;title\x07",  # OSC: sets the terminal's title
    "a\rb",  # overwrites what was printed
    "a\nb",
    "a\tb",
    "a\x00b",
    "a\x7fb",
    "a\x9bb",  # C1 CSI
    "evil\u202etxt.exe",  # right-to-left override
    "a\u2066b\u2069",  # isolates
    "a\u200eb",  # left-to-right mark
    "a\u200bb",  # zero-width space
    "a\u2028b",  # line separator
    "a\u2029b",  # paragraph separator
    "\ufeffbom",
    "tag\U000e0041",  # invisible tag characters
]
SAFE = [
    "ann",
    "café",
    "ユーザー",
    "👩\u200d💻",  # an emoji sequence joined by ZWJ
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian, with ZWNJ
    "a b",
    "[red]x[/]",
    "O'Brien",
]


@pytest.mark.parametrize("text", UNSAFE)
def test_unsafe_text_is_refused_by_the_pattern_and_shown_escaped(text: str) -> None:
    assert not is_safe_text(text)
    assert re.fullmatch(SAFE_TEXT, text) is None
    assert is_safe_text(printable(text)) and is_safe_text(replace_unsafe(text))


@pytest.mark.parametrize("text", SAFE)
def test_ordinary_text_of_any_script_is_allowed(text: str) -> None:
    assert is_safe_text(text) and re.fullmatch(SAFE_TEXT, text)
    assert printable(text) == text


def test_every_control_and_separator_character_is_unsafe() -> None:
    for cp in range(0x110000):
        char = chr(cp)
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            assert not is_safe_text(char), hex(cp)
        if unicodedata.bidirectional(char) in ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI",
                                               "FSI", "PDI"):  # fmt: skip
            assert not is_safe_text(char), hex(cp)


@SQLITE_ONLY
def test_key_names_and_tenants_follow_the_rule(api_workspace) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match="key name"):
        create_key(api_workspace.db, "app", "shop", "shop\x1b[2J")
    with pytest.raises(InvalidInputError, match="tenant"):
        create_key(api_workspace.db, "app", "shop\n")


def _counts(ws) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    with ws.db.session() as s:
        return tuple(
            s.scalar(select(func.count()).select_from(t))
            for t in (Feedback, Label, ReviewItem, Sample)
        )


@SQLITE_ONLY
def test_every_route_refuses_unsafe_ids_and_labels(client, keys, make_png, api_workspace):  # type: ignore[no-untyped-def]
    r = client.post(
        "/v1/predict", files={"file": ("x.png", make_png(11), "image/png")}, headers=auth(keys.app)
    )
    assert r.status_code == 201
    pid = r.json()["prediction_id"]
    with api_workspace.db.session() as s:
        pool_id = s.scalars(select(Sample.id).where(Sample.split == "pool").limit(1)).one()
        s.add(ReviewItem(sample_id=pool_id, reason="uncertain", proposed_label="3", score=0.5))
    with api_workspace.db.session() as s:
        item_id = s.scalars(select(ReviewItem.id)).one()
    app, eng = auth(keys.app), auth(keys.engineer)
    good = {"prediction_id": pid, "kind": "correct", "label": "3", "user_id": "ann"}
    before = _counts(api_workspace)
    for bad in UNSAFE:
        requests = [
            ("/v1/feedback", {"json": {**good, "user_id": bad}, "headers": app}),
            ("/v1/feedback", {"json": {**good, "label": bad}, "headers": app}),
            ("/v1/feedback", {"json": {**good, "prediction_id": bad}, "headers": app}),
            ("/v1/feedback/batch", {"json": {"items": [{**good, "user_id": bad}]}, "headers": app}),
            ("/v1/feedback/batch",
             {"json": {"items": [{**good, "idempotency_key": bad}]}, "headers": app}),
            (f"/v1/review/{item_id}",
             {"json": {"decision": "accept", "label": bad}, "headers": eng}),
            (f"/v1/review/{item_id}",
             {"json": {"decision": "accept", "reviewer": bad}, "headers": eng}),
            ("/v1/samples/uris", {"json": {"items": [{"uri": f"s3://b/{bad}"}]}, "headers": eng}),
            ("/v1/samples/uris",
             {"json": {"items": [{"uri": "s3://b/x", "label": bad}]}, "headers": eng}),
            ("/v1/samples",
             {"files": {"files": ("y.png", make_png(12), "image/png")}, "data": {"label": bad},
              "headers": eng}),
        ]  # fmt: skip
        for path, kwargs in requests:
            r = client.post(path, **kwargs)
            assert r.status_code == 422, (path, bad, r.text)
            [detail] = r.json()["error"]["details"]
            assert detail["msg"] == "must not contain control characters or invisible " + (
                "formatting characters"
            ), (path, bad, r.text)
        r = client.get("/v1/review", params={"label": bad}, headers=eng)
        assert r.status_code == 422, bad
    # Header values cannot hold C0 controls at all; obs-text carries the C1 ones.
    r = client.post("/v1/feedback", json=good, headers={**app, "Idempotency-Key": b"k\x9b"})
    assert r.status_code == 422, r.text
    assert _counts(api_workspace) == before  # nothing written

    for ok in SAFE:  # the same routes take ordinary text of any script
        r = client.post("/v1/feedback", json={**good, "user_id": ok}, headers=app)
        assert r.status_code == 201, (ok, r.text)


@SQLITE_ONLY
def test_an_upload_keeps_its_file_name_without_unsafe_characters(client, keys, make_png):  # type: ignore[no-untyped-def]
    files = {"files": ("\x1b[31mevil\u202egnp.png", make_png(13), "image/png")}
    r = client.post("/v1/samples", files=files, headers=auth(keys.app))
    assert r.status_code == 201, r.text
    sample = client.get(f"/v1/samples/{r.json()['sample_ids'][0]}", headers=auth(keys.app))
    assert sample.json()["original_name"] == "\ufffd[31mevil\ufffdgnp.png"
