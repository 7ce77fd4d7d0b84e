"""Threshold calibration: target precision on synthetic scores, few labels, Clopper-Pearson."""

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from flywheel.select import calibrated as selection
from flywheel.select.calibration import Calibration, calibrate_thresholds


def test_selection_re_exports_calibration():
    assert selection.Calibration is Calibration
    assert selection.calibrate_thresholds is calibrate_thresholds


def _synthetic(n, num_classes, g, rng):
    scores = rng.beta(5, 1.5, n)
    predicted = rng.integers(0, num_classes, n)
    return scores, predicted, rng.random(n) < g(scores)


def _true_precision_and_coverage(thresholds, scores, predicted, g):
    acc = scores >= thresholds[predicted]
    return g(scores[acc]).mean() if acc.any() else np.nan, acc.mean()


def _oracle_coverage(scores, predicted, g, target, num_classes):
    covered = 0
    for c in range(num_classes):
        s = np.sort(scores[predicted == c])[::-1]
        prec = np.cumsum(g(s)) / np.arange(1, len(s) + 1)
        covered += np.flatnonzero(prec >= target)[-1] + 1 if (prec >= target).any() else 0
    return covered / len(scores)


@pytest.mark.parametrize(
    "g",
    [
        lambda s: expit(2.0 * np.log(s / (1 - s)) + 1.0),  # logistic in logit(score)
        lambda s: norm.cdf(6 * (s - 0.45)),  # probit in the raw score: a misspecified map
    ],
    ids=["logistic", "misspecified"],
)
def test_calibration_reaches_target_with_good_coverage(g):
    rng = np.random.default_rng(0)
    cal = _synthetic(3000, 4, g, rng)
    pool_scores, pool_pred, _ = _synthetic(50_000, 4, g, rng)
    cal_result = calibrate_thresholds(
        *cal, 4, 0.99, pool_scores=pool_scores, pool_predicted=pool_pred, n_bootstrap=50
    )
    precision, coverage = _true_precision_and_coverage(
        cal_result.thresholds, pool_scores, pool_pred, g
    )
    oracle = _oracle_coverage(pool_scores, pool_pred, g, 0.99, 4)
    assert precision >= 0.99 - 0.003
    assert oracle > 0.1 and coverage >= 0.7 * oracle
    assert np.all(cal_result.estimated_precision >= 0.99)


def test_calibration_with_few_labels_is_conservative():
    g = lambda s: expit(2.0 * np.log(s / (1 - s)) + 1.0)  # noqa: E731
    rng = np.random.default_rng(1)
    pool_scores, pool_pred, _ = _synthetic(20_000, 5, g, rng)
    misses = 0
    for _ in range(20):  # 50 labels (10 per class) per run, as in an early cycle
        cal = calibrate_thresholds(
            *_synthetic(50, 5, g, rng),
            5,
            0.99,
            pool_scores=pool_scores,
            pool_predicted=pool_pred,
            n_bootstrap=30,
        )
        precision, _ = _true_precision_and_coverage(cal.thresholds, pool_scores, pool_pred, g)
        misses += bool(precision < 0.985)  # nan (accept nothing) is not a miss
    assert misses <= 3


def test_certified_precision_is_the_clopper_pearson_bound():
    scores = np.linspace(0.995, 0.999, 200)
    cal = calibrate_thresholds(
        scores, np.zeros(200, int), np.ones(200, bool), 1, 0.9, confidence=0.95
    )
    assert cal.thresholds[0] == scores.min()
    # All n correct: the one-sided 95 % lower bound is 0.05 ** (1 / n).
    assert cal.certified_precision[0] == pytest.approx(0.05 ** (1 / 200), rel=1e-9)


def test_calibration_rejects_a_useless_score():
    rng = np.random.default_rng(2)
    scores = rng.random(500)
    cal = calibrate_thresholds(scores, np.zeros(500, int), rng.random(500) < 0.7, 1, 0.99)
    assert np.isinf(cal.thresholds[0]) and np.isnan(cal.estimated_precision[0])
