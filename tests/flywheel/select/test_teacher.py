"""The pool teacher: label propagation over an embedding, certainty-weighted targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flywheel.config import LearningSettings
from flywheel.errors import InvalidInputError
from flywheel.select.teacher import certainty, propagation_teacher, teacher_rule


def test_certainty_is_one_minus_normalised_entropy() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.75, 0.25]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # by hand: 0.5623 nats
    np.testing.assert_allclose(certainty(p), [1.0, 0.0, 1 - h / math.log(2)], atol=1e-6)
    # Three classes: uniform is 0 whatever the count.
    assert certainty(np.full((1, 3), 1 / 3))[0] == pytest.approx(0.0, abs=1e-6)


def clusters(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, well-separated clusters of unit vectors in 8-d."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:3]
    x = np.concatenate([c + 0.05 * rng.standard_normal((per_class, 8)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(3), per_class)


def test_labels_spread_to_their_clusters_with_high_certainty() -> None:
    x, y = clusters(30)
    labeled = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(3)])
    pool = np.setdiff1d(np.arange(len(y)), labeled)
    teacher = propagation_teacher(x[labeled], x[pool], y[labeled], 3, LearningSettings())
    np.testing.assert_array_equal(teacher.labels, y[pool])
    assert teacher.weights.dtype == np.float32 and teacher.weights.min() > 0.5
    # Two labels a class: each is held out once and found from its cluster mate.
    assert teacher.heldout_accuracy == 1.0
    assert teacher.summary()["pool"] == len(pool)


def test_one_label_in_a_class_teaches_but_cannot_be_held_out() -> None:
    x, y = clusters(20)
    labeled = np.array([np.flatnonzero(y == c)[0] for c in range(3)])
    pool = np.setdiff1d(np.arange(len(y)), labeled)
    teacher = propagation_teacher(x[labeled], x[pool], y[labeled], 3, LearningSettings())
    np.testing.assert_array_equal(teacher.labels, y[pool])
    assert teacher.heldout_accuracy is None


def test_an_empty_pool_gives_empty_targets() -> None:
    x, y = clusters(2)
    teacher = propagation_teacher(x, x[:0], y, 3, LearningSettings())
    assert len(teacher.labels) == len(teacher.weights) == 0


@pytest.mark.parametrize(
    "labeled, pool, labels",
    [
        (np.zeros((3, 4)), np.zeros((5, 2)), np.arange(3)),  # widths differ
        (np.zeros((3, 4)), np.zeros((5, 4)), np.arange(2)),  # a label short
        (np.zeros((0, 4)), np.zeros((5, 4)), np.arange(0)),  # nothing labeled
    ],
)
def test_mismatched_inputs_are_refused(labeled, pool, labels) -> None:
    with pytest.raises(InvalidInputError):
        propagation_teacher(labeled, pool, labels, 3, LearningSettings())


def test_auto_teaches_only_while_a_class_cannot_be_held_out() -> None:
    two_each, one_short = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 1, 2, 2])
    assert teacher_rule("auto", two_each, 3)[0] is False
    teach, reason = teacher_rule("auto", one_short, 3)
    assert teach and "a class has 1 human label" in reason
    # A class no one labeled yet cannot be held out either.
    assert teacher_rule("auto", two_each, 4)[0] is True
    assert teacher_rule("propagation", two_each, 3)[0] is True
    assert teacher_rule("none", one_short, 3)[0] is False
    with pytest.raises(InvalidInputError):
        teacher_rule("always", two_each, 3)
