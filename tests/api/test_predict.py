"""POST /v1/predict: served from the champion, stored, and refused cleanly on bad input."""

from __future__ import annotations

from sqlalchemy import func, select

from flywheel.db import Prediction, Sample
from flywheel.workspace import Workspace
from tests.api.conftest import CLASSES, auth


def _upload(client, token, data, name="x.png", ctype="image/png", **form):
    return client.post(
        "/v1/predict", files={"file": (name, data, ctype)}, data=form, headers=auth(token)
    )


def test_predict_upload_stores_sample_and_prediction(client, keys, make_png, api_workspace):
    r = _upload(client, keys.app, make_png(1), top_k="3")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["model_version"] == "1"
    assert body["label"] in CLASSES
    assert len(body["top_k"]) == 3
    assert body["top_k"][0]["label"] == body["label"]
    assert body["confidence"] == body["top_k"][0]["probability"]
    probs = [t["probability"] for t in body["top_k"]]
    assert probs == sorted(probs, reverse=True)
    with api_workspace.db.session() as s:
        sample = s.get(Sample, body["sample_id"])
        assert sample is not None and sample.split == "pool" and sample.source == "predict:shop"
        pred = s.get(Prediction, body["prediction_id"])
        assert pred is not None and pred.app_id == "shop" and pred.label == body["label"]
    assert api_workspace.blobs.exists(body["sample_id"])


def test_same_bytes_stored_once_predicted_twice(client, keys, make_png, api_workspace):
    first = _upload(client, keys.app, make_png(2)).json()
    second = _upload(client, keys.app, make_png(2)).json()
    assert first["sample_id"] == second["sample_id"]
    assert first["prediction_id"] != second["prediction_id"]
    with api_workspace.db.session() as s:
        n = s.scalar(select(func.count()).where(Sample.id == first["sample_id"]))
    assert n == 1


def test_predict_by_sample_id(client, keys, api_workspace):
    with api_workspace.db.session() as s:
        sid = s.scalars(select(Sample.id).where(Sample.split == "pool")).first()
    # An engineer key: no tenant sent the fixture's digits (app keys: test_sample_tenancy.py).
    r = client.post("/v1/predict", data={"sample_id": sid}, headers=auth(keys.engineer))
    assert r.status_code == 201, r.text
    assert r.json()["sample_id"] == sid
    assert len(r.json()["top_k"]) == 5  # settings.api.top_k


def test_predict_bad_inputs_write_nothing(client, keys, make_png, api_workspace):
    def counts():
        with api_workspace.db.session() as s:
            return s.scalar(select(func.count()).select_from(Sample)), s.scalar(
                select(func.count()).select_from(Prediction)
            )

    before = counts()
    cases = [
        (_upload(client, keys.app, b"plain text, not an image", "a.txt", "text/plain"), 415),
        (_upload(client, keys.app, make_png(3)[:70]), 422),  # truncated PNG
        (_upload(client, keys.app, b""), 422),
        (client.post("/v1/predict", data={"sample_id": "0" * 64}, headers=auth(keys.app)), 404),
        (client.post("/v1/predict", data={"sample_id": "short"}, headers=auth(keys.app)), 422),
        (client.post("/v1/predict", headers=auth(keys.app)), 422),  # neither file nor id
        (
            client.post(
                "/v1/predict",
                files={"file": ("x.png", make_png(4), "image/png")},
                data={"sample_id": "0" * 64},
                headers=auth(keys.app),
            ),
            422,
        ),  # both
        (_upload(client, keys.app, make_png(5), top_k="0"), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["message"]
    assert counts() == before


def test_promotion_reaches_serving_without_restart(client, keys, make_png, api_settings):
    from flywheel.learn.registry import ModelRegistry

    assert _upload(client, keys.app, make_png(6)).json()["model_version"] == "1"
    ModelRegistry.from_settings(api_settings).promote("2", "test")  # another process, say
    assert _upload(client, keys.app, make_png(6)).json()["model_version"] == "2"


def test_no_champion_is_a_clear_conflict(client, keys, make_png, api_settings):
    from flywheel.learn.registry import ModelRegistry

    registry = ModelRegistry.from_settings(api_settings)
    registry.client.delete_registered_model_alias(registry.model_name, "champion")
    r = _upload(client, keys.app, make_png(7))
    assert r.status_code == 409
    assert "no champion" in r.json()["error"]["message"]
    assert client.get("/readyz").status_code == 503


def test_predictions_are_counted_in_metrics(client, keys, make_png):
    _upload(client, keys.app, make_png(8))
    text = client.get("/metrics").text
    assert 'flywheel_predictions_total{model_version="1"} 1.0' in text
    assert 'flywheel_champion_info{version="1"} 1.0' in text
    assert 'route="/v1/predict",status="201"' in text


def test_workspace_fixture_has_labels(api_workspace: Workspace):
    # Guards the fixtures the API tests rely on: seed labels of every class.
    from flywheel.feedback.review import label_set

    assert label_set(api_workspace.db) == CLASSES


def test_a_large_upload_is_served_and_stored_whole(client, keys, api_workspace):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1000, 1000)).save(buf, format="PNG")  # served at the model's input size
    r = _upload(client, keys.app, buf.getvalue())
    assert r.status_code == 201, r.text
    with api_workspace.db.session() as s:
        sample = s.get(Sample, r.json()["sample_id"])
        assert (sample.width, sample.height) == (1000, 1000)
