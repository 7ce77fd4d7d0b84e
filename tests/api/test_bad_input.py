"""The bad-input catalogue: every hostile or malformed request we know of, in one table.

Each case is one request against the real app. It must get its 4xx (with our error code
where the app chose one) and leave every table and the blob store exactly as they were.
Add a case here when a new kind of bad input is found; the routes' own tests keep the
behaviour around it (what the good requests do).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from api.app import create_app
from flywheel.db import (
    Feedback,
    GroundTruth,
    Label,
    Prediction,
    Quarantine,
    ReviewItem,
    Sample,
    SampleAccess,
)
from flywheel.serve.api_keys import create_key
from flywheel.workspace import Workspace, open_workspace
from tests.api.conftest import ModelStore, add_digits, api_settings_for, auth

TABLES = (Sample, Label, GroundTruth, Prediction, Feedback, ReviewItem, SampleAccess, Quarantine)


@dataclass(frozen=True)
class World:
    """What a case may refer to: keys, a prediction of the app's tenant, a stored sample."""

    app: str
    engineer: str
    other_app: str
    prediction_id: str
    sample_id: str  # uploaded by the app's tenant ("shop")


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[TestClient, World], object]
    status: int
    code: str | None = None  # our error code, where the app sets one


def _png(size: tuple[int, int] = (8, 8), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _upload(files: list[tuple[str, bytes, str]], key: str = "app", **form: str):
    def send(c: TestClient, w: World):
        parts = [("files", f) for f in files]
        return c.post("/v1/samples", files=parts, data=form, headers=auth(getattr(w, key)))

    return send


def _uris(items: list[dict], key: str = "engineer"):
    def send(c: TestClient, w: World):
        return c.post("/v1/samples/uris", json={"items": items}, headers=auth(getattr(w, key)))

    return send


def _feedback(change: dict, headers: dict | None = None, key: str = "app"):
    def send(c: TestClient, w: World):
        body = {"prediction_id": w.prediction_id, "kind": "confirm", "user_id": "u", **change}
        return c.post(
            "/v1/feedback", json=body, headers={**auth(getattr(w, key)), **(headers or {})}
        )

    return send


def _get(path: Callable[[World], str], key: str = "app"):
    def send(c: TestClient, w: World):
        return c.get(path(w), headers=auth(getattr(w, key)))

    return send


def _predict(data: dict | None = None, file: bytes | None = None, key: str = "app"):
    def send(c: TestClient, w: World):
        form = {k: (v(w) if callable(v) else v) for k, v in (data or {}).items()}
        files = {"file": ("x.png", file, "image/png")} if file is not None else None
        return c.post("/v1/predict", data=form, files=files, headers=auth(getattr(w, key)))

    return send


TRUNCATED = _png((64, 64))[:-40]
ESC = "\x1b[31mred\x1b[0m"
CASES = [
    # Uploads: corrupt, wrong type, oversize, a bomb, labels an app may not set.
    Case("corrupt image", _upload([("a.png", TRUNCATED, "image/png")]), 422, "invalid_input"),
    Case("empty file", _upload([("a.png", b"", "image/png")]), 422, "invalid_input"),
    Case("not an image", _upload([("a.txt", b"hello", "text/plain")]), 415, "unsupported_media"),
    Case("format not allowed", _upload([("a.ico", b"\0\0\1\0", "image/x-icon")]), 415),
    Case(
        "over the pixel limit",
        _upload([("big.png", _png((2001, 2000)), "image/png")]),
        422,
        "invalid_input",
    ),
    Case("app sets a label", _upload([("a.png", _png(seed=9), "image/png")], label="7"), 403),
    Case(
        "label with escapes",
        _upload([("a.png", _png(seed=9), "image/png")], key="engineer", label=ESC),
        422,
    ),
    Case(
        "unknown split",
        _upload([("a.png", _png(seed=9), "image/png")], key="engineer", split="x"),
        422,
    ),
    # URIs: the server must not be pointed anywhere, nor read outside its roots.
    Case(
        "URI with endpoint query",
        _uris([{"uri": "s3://b/p/x.png?endpoint_override=127.0.0.1:22&scheme=http"}]),
        422,
        "uri_refused",
    ),
    Case("URI with credentials", _uris([{"uri": "s3://k:s@b/p/x.png"}]), 422, "uri_refused"),
    Case("URI with a port", _uris([{"uri": "s3://127.0.0.1:22/x.png"}]), 422, "uri_refused"),
    Case("URI outside roots", _uris([{"uri": "s3://b/p/x.png"}]), 422, "uri_refused"),
    Case(
        "URI climbing out",
        _uris([{"uri": "memory://flywheel-test/../etc/x.png"}]),
        422,
        "uri_refused",
    ),
    Case("local path URI", _uris([{"uri": "file:///etc/passwd"}]), 422),
    Case("app key registers URIs", _uris([{"uri": "memory://flywheel-test/a.png"}], "app"), 403),
    # Feedback: unknown ids, bad labels, control characters, a reused idempotency key.
    Case("unknown prediction", _feedback({"prediction_id": "nope"}), 404, "not_found"),
    Case("unknown kind", _feedback({"kind": "maybe"}), 422),
    Case("correct without label", _feedback({"kind": "correct"}), 422),
    Case("label outside the label set", _feedback({"kind": "correct", "label": "zebra"}), 422),
    Case("user id with ANSI escapes", _feedback({"user_id": ESC}), 422),
    Case("user id with a newline", _feedback({"user_id": "a\nb"}), 422),
    Case("label with a bidi override", _feedback({"kind": "correct", "label": "7\u202e"}), 422),
    Case("another tenant's prediction", _feedback({}, key="other_app"), 403),
    Case(
        "replayed key, other body",
        _feedback({"user_id": "someone else"}, headers={"Idempotency-Key": "k1"}),
        422,
        "idempotency_key_reused",
    ),
    # Samples of another tenant are not there for it; malformed and unknown ids.
    Case("other tenant's sample", _get(lambda w: f"/v1/samples/{w.sample_id}", "other_app"), 404),
    Case(
        "other tenant's bytes",
        _get(lambda w: f"/v1/samples/{w.sample_id}/image", "other_app"),
        404,
    ),
    Case("unknown sample", _get(lambda _: f"/v1/samples/{'0' * 64}"), 404, "not_found"),
    Case("malformed sample id", _get(lambda _: "/v1/samples/abc"), 404),
    Case(
        "predict on another tenant's sample",
        _predict({"sample_id": lambda w: w.sample_id}, key="other_app"),
        404,
    ),
    Case("predict on nothing", _predict(), 422),
    Case("predict on a corrupt file", _predict(file=TRUNCATED), 422),
    # Engineer-only routes for app keys.
    Case("app key lists quarantine", _get(lambda _: "/v1/quarantine"), 403),
    Case("app key starts a cycle", lambda c, w: c.post("/v1/cycles", headers=auth(w.app)), 403),
]


def _state(ws: Workspace) -> tuple:
    with ws.db.session() as s:
        counts = tuple(s.scalar(select(func.count()).select_from(t)) for t in TABLES)
    blobs = Path(ws.settings.storage_root) / "blobs"
    files = sorted(p.name for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else []
    return counts, tuple(files)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, model_store: ModelStore
) -> Iterator[tuple[TestClient, World, Workspace]]:
    """One app for the whole catalogue (each case must change nothing, so they can share)."""
    data = tmp_path_factory.mktemp("bad-input") / "data"
    settings = api_settings_for(data, f"sqlite:///{data.parent / 'flywheel.db'}", model_store)
    settings = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"max_image_pixels": 1_000_000})}
    )
    ws = open_workspace(settings)
    add_digits(ws)
    app, engineer, other = (
        create_key(ws.db, role, tenant)[1]
        for role, tenant in (("app", "shop"), ("engineer", "ml"), ("app", "other"))
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/predict", files={"file": ("x.png", _png(seed=1), "image/png")}, headers=auth(app)
        )
        assert r.status_code == 201, r.text
        prediction_id = r.json()["prediction_id"]
        body = {"prediction_id": prediction_id, "kind": "confirm", "user_id": "u"}
        first = client.post(
            "/v1/feedback", json=body, headers={**auth(app), "Idempotency-Key": "k1"}
        )
        assert first.status_code == 201  # the key the replay case reuses
        r = client.post(
            "/v1/samples",
            files=[("files", ("s.png", _png(seed=2), "image/png"))],
            headers=auth(app),
        )
        assert r.status_code == 201
        world = World(app, engineer, other, prediction_id, r.json()["sample_ids"][0])
        yield client, world, ws
    ws.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: Case, served: tuple[TestClient, World, Workspace]
) -> None:
    client, world, ws = served
    before = _state(ws)
    r = case.send(client, world)
    assert r.status_code == case.status, r.text
    if case.code is not None:
        assert r.json()["error"]["code"] == case.code
    assert _state(ws) == before
