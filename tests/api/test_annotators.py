"""GET /v1/annotators: reliability and agreement of the users who send feedback."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from flywheel.db import Feedback, Label, Prediction, Sample
from tests.api.conftest import auth


def _vote(s, sample_id: str, predicted: str, user: str, kind: str, label: str | None = None):
    pred = Prediction(
        id=str(uuid.uuid4()),
        sample_id=sample_id,
        model_version="1",
        label=predicted,
        confidence=0.9,
        top_k=[],
        app_id="shop",
    )
    s.add(pred)
    s.flush()
    s.add(
        Feedback(
            id=str(uuid.uuid4()),
            prediction_id=pred.id,
            user_id=user,
            app_id="shop",
            kind=kind,
            label=label,
        )
    )


def test_annotator_report(client, keys, api_workspace):
    eng = auth(keys.engineer)
    empty = client.get("/v1/annotators", headers=eng)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "annotators": [],
        "pairwise_kappa": [],
        "fleiss_kappa": None,
        "items_multi_rated": 0,
        "samples": 0,
        "votes": 0,
    }

    with api_workspace.db.session() as s:
        gold = s.scalars(
            select(Label).where(Label.source == "seed", Label.label != "7").order_by(Label.id)
        ).first()
        b, c = s.scalars(
            select(Sample.id).where(Sample.split == "pool").order_by(Sample.id).limit(2)
        ).all()
        # u1 confirms and u2 corrects to the same labels everywhere: they agree fully.
        # u3 contradicts the gold (seed) label of the one sample it rates.
        for sid, label in ((gold.sample_id, gold.label), (b, "1"), (c, "2")):
            _vote(s, sid, label, "u1", "confirm")
            _vote(s, sid, "0", "u2", "correct", label)
        _vote(s, gold.sample_id, gold.label, "u3", "correct", "7")

    r = client.get("/v1/annotators", headers=eng)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["samples"], body["votes"], body["items_multi_rated"]) == (3, 7, 3)
    by_name = {a["annotator"]: a for a in body["annotators"]}
    assert sorted(by_name) == ["shop/u1", "shop/u2", "shop/u3"]
    assert (by_name["shop/u1"]["n_votes"], by_name["shop/u1"]["n_gold"]) == (3, 1)
    assert by_name["shop/u1"]["gold_accuracy"] == 1.0
    assert by_name["shop/u3"]["gold_accuracy"] == 0.0
    assert by_name["shop/u3"]["accuracy"] < by_name["shop/u1"]["accuracy"]
    pairs = {(p["annotator_a"], p["annotator_b"]): p for p in body["pairwise_kappa"]}
    assert pairs[("shop/u1", "shop/u2")]["n_items"] == 3
    assert pairs[("shop/u1", "shop/u2")]["kappa"] == pytest.approx(1.0)
    assert pairs[("shop/u1", "shop/u3")] == {
        "annotator_a": "shop/u1",
        "annotator_b": "shop/u3",
        "n_items": 1,
        "kappa": None,  # one shared sample says nothing about chance agreement
    }
    assert body["fleiss_kappa"] is not None and body["fleiss_kappa"] < 1.0

    # min_overlap=1 gives every sharing pair a kappa.
    one = client.get("/v1/annotators?min_overlap=1", headers=eng).json()
    assert all(p["kappa"] is not None for p in one["pairwise_kappa"])
    assert client.get("/v1/annotators?min_overlap=0", headers=eng).status_code == 422

    assert client.get("/v1/annotators", headers=auth(keys.app)).status_code == 403
    assert client.get("/v1/annotators", headers=auth(keys.revoked)).status_code == 401
    assert client.get("/v1/annotators").status_code == 401
