"""Review decisions become labels: accept → human label, reject → retract machine labels."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flywheel.db import Label, ReviewItem
from flywheel.db.models import ReviewState
from flywheel.errors import ConflictError, InvalidInputError, NotFoundError
from flywheel.feedback.review import decide_review, helpful_order, label_set, list_review
from tests.conftest import sample_row

LABELS = ["cat", "dog"]


def _item(ws, n: int, proposed: str | None = "cat", pseudo: bool = True) -> int:
    sid = f"{n:064x}"
    with ws.db.session() as s:
        s.add(sample_row(n, source="t"))
        s.flush()
        if pseudo:
            s.add(Label(sample_id=sid, label="cat", source="pseudo", confidence=0.7, method="knn"))
        item = ReviewItem(
            sample_id=sid, reason="uncertain", proposed_label=proposed, score=0.5, evidence={}
        )
        s.add(item)
        s.flush()
        return item.id


def _labels(ws, n: int) -> list[Label]:
    with ws.db.session() as s:
        return list(
            s.scalars(select(Label).where(Label.sample_id == f"{n:064x}").order_by(Label.id))
        )


def test_accept_writes_a_human_label_that_supersedes(workspace):
    item = _item(workspace, 1)
    out = decide_review(workspace.db, item, "accept", "rita", "dog", LABELS)
    assert out.state == ReviewState.ACCEPTED and out.decided_label == "dog"
    pseudo, human = _labels(workspace, 1)
    assert (human.source, human.label, human.annotator) == ("human", "dog", "rita")
    assert human.supersedes_id == pseudo.id
    with pytest.raises(ConflictError):
        decide_review(workspace.db, item, "reject", "rita", None, LABELS)


def test_accept_defaults_to_the_proposed_label(workspace):
    item = _item(workspace, 2)
    assert decide_review(workspace.db, item, "accept", "r", None, LABELS).decided_label == "cat"


def test_reject_retracts_the_pseudo_label(workspace):
    item = _item(workspace, 3)
    decide_review(workspace.db, item, "reject", "r", None, LABELS)
    newest = _labels(workspace, 3)[-1]
    assert newest.retracted and newest.source == "pseudo"
    assert list_review(workspace.db).total == 0
    assert list_review(workspace.db, ReviewState.REJECTED).items[0].id == item


def test_bad_decisions_change_nothing(workspace):
    item = _item(workspace, 4, proposed=None, pseudo=False)
    with pytest.raises(InvalidInputError, match="proposes no label"):
        decide_review(workspace.db, item, "accept", "r", None, LABELS)
    with pytest.raises(InvalidInputError, match="label set"):
        decide_review(workspace.db, item, "accept", "r", "bird", LABELS)
    with pytest.raises(InvalidInputError, match="takes no label"):
        decide_review(workspace.db, item, "reject", "r", "cat", LABELS)
    with pytest.raises(NotFoundError):
        decide_review(workspace.db, 999, "accept", "r", "cat", LABELS)
    assert _labels(workspace, 4) == []
    assert list_review(workspace.db).items[0].state == ReviewState.OPEN


def test_paging_filter_and_label_set(workspace):
    for n in range(5, 10):
        _item(workspace, n, proposed="cat" if n % 2 else "dog")
    page = list_review(workspace.db, limit=2, offset=1)
    assert page.total == 5 and len(page.items) == 2
    assert list_review(workspace.db, label="dog").total == 2
    with workspace.db.session() as s:
        s.add(Label(sample_id=f"{5:064x}", label="fox", source="seed", method="m"))
    assert label_set(workspace.db) == ["fox"]  # pseudo labels do not define the label set


def _queue(ws, rows: list[tuple[str, str | None, float, dict]]) -> list[int]:
    """Review items (reason, proposed label, score, evidence) on fresh samples; their ids."""
    ids = []
    with ws.db.session() as s:
        for n, (reason, proposed, score, evidence) in enumerate(rows, start=100):
            s.add(sample_row(n, source="t"))
            s.flush()
            item = ReviewItem(
                sample_id=f"{n:064x}",
                reason=reason,
                proposed_label=proposed,
                score=score,
                evidence=evidence,
            )
            s.add(item)
            s.flush()
            ids.append(item.id)
    return ids


def test_helpful_order_questions_human_labels_first_then_takes_turns_by_label(workspace):
    ids = _queue(
        workspace,
        [
            ("uncertain", "cat", 0.9, {}),  # 0
            ("uncertain", "cat", 0.2, {}),  # 1
            ("uncertain", "dog", 0.3, {}),  # 2
            ("uncertain", "cat", 0.1, {}),  # 3
            ("uncertain", "dog", 0.5, {}),  # 4
            ("feedback_conflict", "dog", 0.6, {"votes": []}),  # 5
            # An audit item's score is the suggestion's probability; its doubt about the
            # given label is the self-confidence in the evidence (here: very low).
            ("label_audit", "cat", 0.95, {"self_confidence": 0.05}),  # 6
        ],
    )
    # Questioned human labels first (most doubtful first), then the uncertain pseudo-labels:
    # least certain first, cat and dog taking turns.
    expected = [ids[i] for i in (6, 5, 3, 2, 1, 4, 0)]
    page = list_review(workspace.db, order="helpful", limit=100)
    assert [r.id for r in page.items] == expected and page.total == 7
    paged = list_review(workspace.db, order="helpful", limit=3, offset=2)
    assert [r.id for r in paged.items] == expected[2:5] and paged.total == 7
    # Filters apply before ordering; the default order is unchanged (as queued).
    dogs = list_review(workspace.db, label="dog", order="helpful")
    assert [r.id for r in dogs.items] == [ids[5], ids[2], ids[4]]
    assert [r.id for r in list_review(workspace.db).items] == ids
    # Decided items leave the open queue's order.
    decide_review(workspace.db, ids[6], "reject", "r", None, LABELS)
    assert list_review(workspace.db, order="helpful").items[0].id == ids[5]
    with pytest.raises(InvalidInputError, match="unknown order"):
        list_review(workspace.db, order="oldest")  # type: ignore[arg-type]


def test_helpful_order_round_robin_over_many_labels():
    # 3 labels with 3, 2 and 1 items: one of each label per turn, least certain first.
    items = [
        (1, "uncertain", "a", 0.5),
        (2, "uncertain", "a", 0.1),
        (3, "uncertain", "a", 0.3),
        (4, "uncertain", "b", 0.2),
        (5, "uncertain", "b", 0.4),
        (6, "uncertain", None, 0.05),
    ]
    assert helpful_order(items) == [6, 2, 4, 3, 5, 1]
    assert helpful_order([]) == []


def test_rejecting_an_audit_item_keeps_the_label(workspace):
    [item] = _queue(workspace, [("label_audit", "dog", 0.9, {"self_confidence": 0.05})])
    sid = f"{100:064x}"
    with workspace.db.session() as s:
        s.add(Label(sample_id=sid, label="cat", source="feedback", confidence=0.95, method="ds"))
    decide_review(workspace.db, item, "reject", "r", None, LABELS)
    with workspace.db.session() as s:
        rows = s.scalars(select(Label).where(Label.sample_id == sid)).all()
        assert [(r.label, r.source, r.retracted) for r in rows] == [("cat", "feedback", False)]
