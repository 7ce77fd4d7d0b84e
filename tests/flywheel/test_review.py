"""Review decisions become labels: accept → human label, reject → retract machine labels."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flywheel.db import Label, ReviewItem
from flywheel.db.models import ReviewState
from flywheel.errors import ConflictError, InvalidInputError, NotFoundError
from flywheel.review import decide_review, label_set, list_review
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
