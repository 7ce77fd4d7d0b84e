"""Annotator consensus: Dawid-Skene numerics, agreement statistics, the database edge."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from itertools import count

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import func, select

from flywheel.config import ConsensusSettings
from flywheel.db import Feedback, Label, Prediction, ReviewItem
from flywheel.errors import InvalidInputError
from flywheel.feedback.annotators import cohen_kappa, fleiss_kappa, pairwise_kappa
from flywheel.feedback.consensus import (
    Vote,
    annotator_report,
    dawid_skene,
    majority_vote,
    resolve_feedback,
)
from flywheel.workspace import Workspace
from tests.conftest import sample_row

SETTINGS = ConsensusSettings()


def _json(obj: object) -> str:
    return json.dumps(asdict(obj), allow_nan=False)  # type: ignore[call-overload]


# --- Dawid-Skene numerics -----------------------------------------------------------------


def test_dawid_skene_recovers_truth_where_majority_vote_fails():
    """Two colluding annotators (always the next class) outvote one reliable annotator;
    gold items show who is reliable, and DS inverts the colluders' confusion."""
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(0)
    truth = {f"i{n}": classes[int(rng.integers(3))] for n in range(40)}
    shifted = {c: classes[(i + 1) % 3] for i, c in enumerate(classes)}
    votes = [Vote(i, "reliable", t) for i, t in truth.items()]
    votes += [Vote(i, who, shifted[t]) for i, t in truth.items() for who in ("bad1", "bad2")]
    gold = {i: t for n, (i, t) in enumerate(truth.items()) if n < 10}
    test_items = [i for i in truth if i not in gold]

    mv = majority_vote(votes, classes)
    ds = dawid_skene(votes, classes, gold, SETTINGS)
    assert sum(mv[i].label == truth[i] for i in test_items) == 0
    assert all(ds.items[i].label == truth[i] for i in test_items)
    assert min(ds.items[i].confidence for i in test_items) > 0.99
    acc = {a: r.accuracy for a, r in ds.annotators.items()}
    assert acc["reliable"] > 0.85 and acc["bad1"] < 0.3 and acc["bad2"] < 0.3
    assert ds.annotators["reliable"].gold_accuracy == 1.0
    assert ds.annotators["bad1"].gold_accuracy == 0.0
    assert ds.annotators["bad1"].n_gold == 10 and ds.annotators["bad1"].n_votes == 40
    assert ds.converged and ds.iterations <= SETTINGS.max_iterations


def test_gold_items_are_clamped_and_new_annotators_trusted_moderately():
    votes = [Vote("g", "x", "b"), Vote("g", "y", "b"), Vote("h", "x", "a")]
    ds = dawid_skene(votes, ["a", "b"], {"g": "a"}, SETTINGS)
    assert ds.items["g"].gold and ds.items["g"].label == "a"
    assert ds.items["g"].distribution == {"a": 1.0, "b": 0.0}
    assert ds.annotators["x"].accuracy < 0.8  # wrong on gold: below the prior's 0.8
    # One vote from an unknown annotator, balanced classes: believed at the prior's 0.8,
    # not enough to skip review; a second agreeing vote is.
    one = dawid_skene([Vote("new", "z", "a")], ["a", "b"], settings=SETTINGS)
    assert one.items["new"].confidence == pytest.approx(0.8, abs=0.02)
    assert one.annotators["z"].accuracy == pytest.approx(0.8, abs=0.05)
    two = dawid_skene([Vote("new", "z", "a"), Vote("new", "w", "a")], ["a", "b"])
    assert two.items["new"].confidence >= SETTINGS.min_confidence


def test_reject_is_negative_evidence_weighed_by_reliability():
    classes = ["a", "b", "c"]
    ds = dawid_skene([Vote("i", "x", "a", reject=True)], classes, settings=SETTINGS)
    dist = ds.items["i"].distribution
    assert dist["a"] < 0.1 and dist["b"] == pytest.approx(dist["c"], abs=1e-9)
    # Two classes: a reject is a vote for the other class; two rejects make it confident.
    two = dawid_skene(
        [Vote("i", "x", "a", reject=True), Vote("i", "y", "a", reject=True)], ["a", "b"]
    )
    assert two.items["i"].label == "b" and two.items["i"].confidence > 0.9
    # A reject tips a 1:1 tie; a reject from an annotator proven wrong on gold tips it less.
    tie = [Vote("i", "x", "a"), Vote("i", "y", "b")]
    base = dawid_skene(tie, classes).items["i"].distribution["a"]
    careful = dawid_skene([*tie, Vote("i", "z", "a", reject=True)], classes)
    assert careful.items["i"].label == "b"
    gold = {f"g{n}": classes[n % 3] for n in range(6)}  # balanced: class priors stay flat
    sloppy_gold = [Vote(g, "z", label, reject=True) for g, label in gold.items()]
    # z rejected the true label on all six gold items.
    sloppy = dawid_skene([*tie, Vote("i", "z", "a", reject=True), *sloppy_gold], classes, gold)
    assert careful.items["i"].distribution["a"] < base - 0.3
    assert sloppy.items["i"].distribution["a"] == pytest.approx(base, abs=0.05)  # ~no weight


def test_degenerate_inputs_give_finite_json_friendly_results():
    one_annotator = dawid_skene([Vote("i", "x", "a"), Vote("j", "x", "b")], ["a", "b"])
    assert one_annotator.items["i"].label == "a" and one_annotator.items["j"].label == "b"
    one_class = dawid_skene([Vote("i", "x", "a"), Vote("i", "y", "a", reject=True)], ["a"])
    assert one_class.items["i"].confidence == 1.0
    empty = dawid_skene([], ["a", "b"])
    assert empty.items == {} and empty.annotators == {}
    for result in (one_annotator, one_class, empty):
        _json(result)  # allow_nan=False: raises on NaN / inf
        for item in result.items.values():
            assert sum(item.distribution.values()) == pytest.approx(1.0)
    only_rejects = majority_vote([Vote("i", "x", "a", reject=True)], ["a", "b"])
    assert only_rejects["i"].confidence == 0.5


def test_invalid_inputs_are_refused():
    with pytest.raises(InvalidInputError):
        dawid_skene([Vote("i", "x", "zebra")], ["a", "b"])
    with pytest.raises(InvalidInputError):
        dawid_skene([], ["a", "b"], {"g": "zebra"})
    with pytest.raises(InvalidInputError):
        dawid_skene([], ["a", "a"])
    with pytest.raises(InvalidInputError):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(InvalidInputError):
        dawid_skene([], ["a", "b"], strength=0.0)
    with pytest.raises(InvalidInputError):
        pairwise_kappa({}, min_overlap=0)
    # A reject of an unknown label is consistent with every class: no error, no effect.
    ds = dawid_skene([Vote("i", "x", "a"), Vote("i", "y", "zebra", reject=True)], ["a", "b"])
    alone = dawid_skene([Vote("i", "x", "a")], ["a", "b"])
    assert ds.items["i"].confidence == pytest.approx(alone.items["i"].confidence)
    assert ds.annotators["y"].n_votes == 1


def test_majority_vote_ties_are_seeded_and_rejects_ignored():
    votes = [Vote("i", "x", "a"), Vote("i", "y", "b"), Vote("i", "z", "a", reject=True)]
    picks = {majority_vote(votes, ["a", "b"], seed=s)["i"].label for s in range(20)}
    assert picks == {"a", "b"}  # a real tie: either, at random
    assert majority_vote(votes, ["a", "b"], seed=3) == majority_vote(votes, ["a", "b"], seed=3)
    assert majority_vote(votes, ["a", "b"])["i"].confidence == 0.5


# --- agreement statistics ------------------------------------------------------------------


def test_cohen_kappa_textbook_and_sklearn():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> p_o .7, p_e .5.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.choice(list("abcd"), 30).tolist()
        y = [v if rng.random() < 0.6 else str(rng.choice(list("abcd"))) for v in x]
        assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined, not NaN
    assert cohen_kappa([], []) is None


def test_fleiss_kappa_textbook_and_varying_raters():
    # Fleiss (1971) as on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    ratings = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.20993, abs=1e-4)
    # By hand: P_i = 1, 0, 1 -> P_bar 2/3; p = (4/9, 5/9) -> P_e 41/81; kappa = 13/40.
    varying = [["a", "a", "a"], ["a", "b"], ["b", "b", "b", "b"], ["a"]]
    assert fleiss_kappa(varying) == pytest.approx(13 / 40)
    assert fleiss_kappa([["a"], ["b"]]) is None  # no item with 2 ratings
    assert fleiss_kappa([["a", "a"], ["a", "a"]]) is None  # one category: undefined


def test_pairwise_kappa_overlap_rule():
    ratings = {
        "x": {"1": "a", "2": "b", "3": "a"},
        "y": {"1": "a", "2": "b", "3": "b"},
        "z": {"3": "a", "9": "b"},
        "w": {"8": "a"},
    }
    pairs = {(p.annotator_a, p.annotator_b): p for p in pairwise_kappa(ratings, min_overlap=2)}
    assert set(pairs) == {("x", "y"), ("x", "z"), ("y", "z")}  # w shares nothing
    assert pairs[("x", "y")].n_items == 3
    assert pairs[("x", "y")].kappa == pytest.approx(cohen_kappa_score(list("aba"), list("abb")))
    assert pairs[("x", "z")].n_items == 1 and pairs[("x", "z")].kappa is None


# --- database edge -------------------------------------------------------------------------

CLOCK = datetime(2024, 1, 1, tzinfo=UTC)


class Fixture:
    def __init__(self, ws: Workspace) -> None:
        self.db = ws.db
        self.ticks = count()

    def sample(self, n: int, split: str = "pool", label: str | None = None) -> str:
        sid = f"{n:064x}"
        with self.db.session() as s:
            s.add(sample_row(n, split))
            if label is not None:
                s.flush()
                s.add(Label(sample_id=sid, label=label, source="seed", method="seed"))
        return sid

    def feedback(
        self, sid: str, user: str, kind: str, label: str | None = None, predicted: str = "cat"
    ) -> None:
        at = CLOCK + timedelta(seconds=next(self.ticks))  # strictly newer than the last
        pid = str(uuid.uuid4())
        with self.db.session() as s:
            s.add(
                Prediction(
                    id=pid,
                    sample_id=sid,
                    model_version="1",
                    label=predicted,
                    confidence=0.7,
                    top_k=[],
                    created_at=at,
                )
            )
            s.flush()
            s.add(
                Feedback(
                    id=str(uuid.uuid4()),
                    prediction_id=pid,
                    user_id=user,
                    app_id="app",
                    kind=kind,
                    label=label,
                    created_at=at,
                )
            )

    def labels(self, sid: str) -> list[Label]:
        with self.db.session() as s:
            return list(s.scalars(select(Label).where(Label.sample_id == sid).order_by(Label.id)))

    def reviews(self) -> list[ReviewItem]:
        with self.db.session() as s:
            return list(s.scalars(select(ReviewItem).order_by(ReviewItem.id)))

    def count_labels(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(Label))


@pytest.fixture
def fx(workspace: Workspace) -> Fixture:
    f = Fixture(workspace)
    f.sample(1, "train", "cat")  # gold: classes cat and dog
    f.sample(2, "train", "dog")
    return f


def test_feedback_labels_written_once_and_conflicts_queued_once(fx: Fixture):
    agreed, split = fx.sample(10), fx.sample(11)
    for user in ("u1", "u2", "u3"):
        fx.feedback(agreed, user, "confirm")
    fx.feedback(split, "u1", "confirm")
    fx.feedback(split, "u2", "correct", "dog")

    first = resolve_feedback(fx.db, SETTINGS)
    assert (first.labels_written, first.review_opened, first.samples) == (1, 1, 2)
    [lab] = fx.labels(agreed)
    assert (lab.label, lab.source, lab.method, lab.annotator) == (
        "cat",
        "feedback",
        "dawid_skene",
        None,
    )
    assert SETTINGS.min_confidence <= lab.confidence < 1.0
    assert lab.supersedes_id is None and not lab.retracted
    assert [v["annotator"] for v in lab.evidence["votes"]] == ["app/u1", "app/u2", "app/u3"]
    assert {v["kind"] for v in lab.evidence["votes"]} == {"confirm"}
    assert lab.evidence["posterior"]["cat"] == pytest.approx(lab.confidence, abs=1e-4)
    [item] = fx.reviews()
    assert (item.sample_id, item.reason, item.state, item.cycle_id) == (
        split,
        "feedback_conflict",
        "open",
        None,
    )
    assert item.score < SETTINGS.min_confidence and len(item.evidence["votes"]) == 2
    assert fx.labels(split) == []

    n_labels = fx.count_labels()
    again = resolve_feedback(fx.db, SETTINGS)  # nothing new: nothing written
    assert (again.labels_written, again.unchanged, again.review_opened, again.review_updated) == (
        0,
        1,
        0,
        0,
    )
    assert fx.count_labels() == n_labels and len(fx.reviews()) == 1

    fx.feedback(split, "u3", "correct", "dog")  # still short of confident: updated in place
    fx.feedback(split, "u1", "confirm")  # u1 repeats: still one vote
    third = resolve_feedback(fx.db, SETTINGS)
    [item] = fx.reviews()
    assert (third.review_opened, third.review_updated) == (0, 1)
    assert len(item.evidence["votes"]) == 3 and item.proposed_label == "dog"


def test_gold_and_test_split_samples_are_never_relabeled(fx: Fixture):
    gold = fx.sample(20, "train", "cat")
    frozen = fx.sample(21, "test", "cat")
    unlabeled_test = fx.sample(22, "test")
    for sid in (gold, frozen, unlabeled_test):
        for user in ("u1", "u2", "u3"):
            fx.feedback(sid, user, "correct", "dog")
    ids = (gold, frozen, unlabeled_test)
    before = {sid: [lab.id for lab in fx.labels(sid)] for sid in ids}
    report = resolve_feedback(fx.db, SETTINGS)
    assert report.measured_only == 3 and report.labels_written == 0
    assert {sid: [lab.id for lab in fx.labels(sid)] for sid in ids} == before
    assert fx.reviews() == []
    # Their votes still measure the annotators: all wrong on both gold samples.
    assert all(r.gold_accuracy == 0.0 and r.n_gold == 2 for r in report.reliability)


def test_human_label_settles_an_open_conflict(fx: Fixture):
    sid = fx.sample(25)
    fx.feedback(sid, "u1", "confirm")
    fx.feedback(sid, "u2", "correct", "dog")
    assert resolve_feedback(fx.db, SETTINGS).review_opened == 1
    with fx.db.session() as s:  # a reviewer decides elsewhere: the sample is gold now
        s.add(Label(sample_id=sid, label="dog", source="human", method="review"))
    report = resolve_feedback(fx.db, SETTINGS)
    assert (report.review_closed, report.measured_only, report.labels_written) == (1, 1, 0)
    assert [r.state for r in fx.reviews()] == ["superseded"]
    assert [lab.source for lab in fx.labels(sid)] == ["human"]


def test_a_dismissed_conflict_is_not_queued_again(fx: Fixture):
    sid = fx.sample(27)
    fx.feedback(sid, "u1", "confirm")
    fx.feedback(sid, "u2", "correct", "dog")
    resolve_feedback(fx.db, SETTINGS)
    with fx.db.session() as s:  # a reviewer rejects it: no label applies
        s.scalars(select(ReviewItem)).one().state = "rejected"
    fx.feedback(sid, "u3", "confirm")
    report = resolve_feedback(fx.db, SETTINGS)
    assert (report.review_opened, report.measured_only) == (0, 1)
    assert [r.state for r in fx.reviews()] == ["rejected"]


def test_later_consensus_supersedes_then_retracts_and_closes_review(fx: Fixture):
    sid = fx.sample(30)
    fx.feedback(sid, "u1", "confirm")
    fx.feedback(sid, "u2", "reject")
    assert resolve_feedback(fx.db, SETTINGS).review_opened == 1
    for user in ("u2", "u3", "u4", "u5"):  # u2 changes its mind: the newest vote wins
        fx.feedback(sid, user, "confirm")
    confident = resolve_feedback(fx.db, SETTINGS)
    assert (confident.labels_written, confident.review_closed) == (1, 1)
    assert [r.state for r in fx.reviews()] == ["superseded"]
    [cat] = fx.labels(sid)

    for user in ("u1", "u2", "u3", "u4", "u5"):
        fx.feedback(sid, user, "correct", "dog")
    flipped = resolve_feedback(fx.db, SETTINGS)
    assert flipped.labels_written == 1
    dog = fx.labels(sid)[-1]
    assert (dog.label, dog.supersedes_id, dog.retracted) == ("dog", cat.id, False)

    for user in ("u1", "u2"):
        fx.feedback(sid, user, "correct", "bird")  # a third class from feedback alone
    fx.feedback(sid, "u3", "reject", predicted="dog")  # u4 and u5 still say dog
    dropped = resolve_feedback(fx.db, SETTINGS)
    assert (dropped.retracted, dropped.review_opened) == (1, 1)
    gone = fx.labels(sid)[-1]
    assert (gone.label, gone.source, gone.method, gone.retracted) == (
        "dog",
        "feedback",
        "dawid_skene",
        True,
    )
    assert gone.supersedes_id == dog.id and gone.confidence < 0.5
    assert [r.state for r in fx.reviews()] == ["superseded", "open"]
    n_labels = fx.count_labels()
    rerun = resolve_feedback(fx.db, SETTINGS)
    assert (rerun.retracted, rerun.review_opened, rerun.review_updated) == (0, 0, 0)
    assert fx.count_labels() == n_labels


def test_annotator_report_fields(fx: Fixture):
    a, b, c = fx.sample(40), fx.sample(41), fx.sample(42)
    gold = fx.sample(43, "train", "cat")
    for sid, l1, l2 in (
        (a, "cat", "cat"),
        (b, "dog", "cat"),
        (c, "dog", "dog"),
        (gold, "cat", "dog"),
    ):
        fx.feedback(sid, "u1", "correct", l1)
        fx.feedback(sid, "u2", "correct", l2)
    fx.feedback(a, "u3", "reject")  # a reject: measured by DS, not an agreement category
    report = annotator_report(fx.db, SETTINGS)
    json.dumps(asdict(report), allow_nan=False)
    by = {r.annotator: r for r in report.annotators}
    assert list(by) == ["app/u1", "app/u2", "app/u3"]
    assert (by["app/u1"].n_votes, by["app/u1"].gold_accuracy, by["app/u1"].n_gold) == (4, 1.0, 1)
    assert (by["app/u2"].gold_accuracy, by["app/u3"].n_gold, by["app/u3"].gold_accuracy) == (
        0.0,
        0,
        None,
    )
    assert by["app/u1"].accuracy > by["app/u2"].accuracy
    [pair] = report.pairwise_kappa
    assert (pair.annotator_a, pair.annotator_b, pair.n_items) == ("app/u1", "app/u2", 4)
    expected = cohen_kappa_score(["cat", "dog", "dog", "cat"], ["cat", "cat", "dog", "dog"])
    assert pair.kappa == pytest.approx(expected)
    assert report.items_multi_rated == 4 and report.samples == 4 and report.votes == 9
    assert report.fleiss_kappa == pytest.approx(
        fleiss_kappa([["cat", "cat"], ["dog", "cat"], ["dog", "dog"], ["cat", "dog"]])
    )
    n_labels = fx.count_labels()
    assert annotator_report(fx.db, SETTINGS) == report  # read-only and deterministic
    assert fx.reviews() == [] and fx.count_labels() == n_labels


def test_cycle_resolves_feedback_before_reading_labels(
    fx: Fixture, workspace: Workspace, monkeypatch
):
    import flywheel.cycle.runner as cycle
    import flywheel.cycle.state as cycle_state

    sid = fx.sample(50)
    for user in ("u1", "u2", "u3"):
        fx.feedback(sid, user, "correct", "dog")

    def stop(*_a, **_k):
        assert [lab.label for lab in fx.labels(sid)] == ["dog"]  # already resolved
        raise RuntimeError("stop here")

    monkeypatch.setattr(cycle_state, "load_cycle_data", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        cycle.run_cycle(workspace, None, workspace.settings.learning)  # type: ignore[arg-type]
