import numpy as np
import pytest

from flywheel.errors import InvalidInputError
from flywheel.select.agreement import AgreementConfig, select_by_agreement, share_for_round
from flywheel.select.result import Decision


def unit(rows: list[list[float]]) -> np.ndarray:
    x = np.array(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# Two classes: anchors on the x axis (class 0) and the y axis (class 1).
ANCHORS = unit([[1, 0], [1, 0.05], [0, 1], [0.05, 1]])
ANCHOR_LABELS = np.array([0, 0, 1, 1])


def test_planted_agreement_quota_and_review() -> None:
    pool = unit(
        [
            [1, 0.01],  # 0: near class 0, model agrees, most confident
            [1, 0.2],  # 1: near class 0, model agrees, less confident
            [1, 0.3],  # 2: near class 0, model agrees, over the class-0 quota
            [0.01, 1],  # 3: near class 1, model agrees
            [1, 0.02],  # 4: near class 0, but the model says class 1: disputed
        ]
    )
    probs = np.array([[0.99, 0.01], [0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.3, 0.7]])
    cfg = AgreementConfig(k=2, tau=0.1, share=0.8, max_review=1)  # quota = round(0.8*5/2) = 2
    r = select_by_agreement(pool, probs, ANCHORS, ANCHOR_LABELS, np.ones(4), 2, cfg)
    assert r.label.tolist() == [0, 0, 0, 1, 1]
    assert r.decision.tolist() == [
        Decision.ACCEPTED,
        Decision.ACCEPTED,
        Decision.NEEDS_REVIEW,  # qualified but over quota: the single review slot
        Decision.ACCEPTED,
        Decision.REJECTED,
    ]
    assert r.counts["accepted"] == 3 and r.counts["needs_review"] == 1
    # Score = sqrt(classifier prob * neighbour share); neighbours are anchors 0 and 1.
    assert r.score[0] == pytest.approx(np.sqrt(0.99 * r.knn_share[0]), rel=1e-5)
    assert r.knn_share[0] > 0.999
    assert set(r.neighbor_ids[0].tolist()) == {0, 1}
    assert r.thresholds[0] == pytest.approx(r.score[1])  # the last accepted class-0 score
    assert r.accepted_per_class.tolist() == [2, 1]


def test_anchor_weights_move_the_vote() -> None:
    pool = unit([[1, 1]])  # equidistant from both axes
    probs = np.array([[0.5, 0.5]])
    cfg = AgreementConfig(k=4, share=1.0)
    heavy_1 = select_by_agreement(
        pool, probs, ANCHORS, ANCHOR_LABELS, np.array([1, 1, 9, 9.0]), 2, cfg
    )
    assert heavy_1.knn_share[0] < 0.5  # the vote leans to class 1, away from argmax class 0


def test_share_schedule() -> None:
    assert [share_for_round(r, 0.5, 0.9, 5) for r in range(6)] == pytest.approx(
        [0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    )
    assert share_for_round(0, 0.5, 0.9, 1) == 0.9


def test_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        select_by_agreement(
            ANCHORS, np.ones((3, 2)), ANCHORS, ANCHOR_LABELS, np.ones(4), 2, AgreementConfig()
        )
    with pytest.raises(InvalidInputError):
        select_by_agreement(
            ANCHORS,
            np.ones((4, 2)) / 2,
            ANCHORS[:0],
            ANCHOR_LABELS[:0],
            np.ones(0),
            2,
            AgreementConfig(),
        )
