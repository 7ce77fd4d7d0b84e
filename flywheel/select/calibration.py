"""Per-class accept thresholds for pseudo-label selection, from held-out predictions.

Calibration estimator (why not plain counting): certifying 99 % precision from counts alone
needs ~300 correct held-out predictions per threshold (Clopper-Pearson, 95 %), far more than
1-10 labels per class give. So the labeled data fit a monotone map P(correct | score, class)
(Platt scaling on logit(score) with a per-class offset, ridge prior towards "the score is
calibrated"), the map is refitted on bootstrap resamples, and its pointwise lower
``1 - confidence`` quantile (capped at the score itself below the lowest calibration score,
where there is no evidence) is averaged over the pool samples a threshold would accept: the
lowest threshold whose estimated precision reaches the target wins. The count-only
Clopper-Pearson bound is reported next to it as ``certified_precision``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import beta

from flywheel.errors import InvalidInputError

_EPS = 1e-4  # scores are clipped to [eps, 1-eps] before logit: a vote share of 1.0 is finite
_GRID = np.linspace(math.log(_EPS / (1 - _EPS)), -math.log(_EPS / (1 - _EPS)), 257)


@dataclass(frozen=True)
class Calibration:
    """Per-class thresholds and the evidence behind them (arrays are (num_classes,))."""

    thresholds: np.ndarray  # float64; +inf: the class cannot reach the target, accept none
    estimated_precision: np.ndarray  # bootstrap-lower-band estimate at the threshold; nan: none
    certified_precision: np.ndarray  # Clopper-Pearson bound from calibration counts alone
    n_calibration: np.ndarray  # int64, calibration samples predicted as each class
    lower_band: np.ndarray  # (num_classes, 257) lower P(correct) on the logit grid ``_GRID``

    def correct_prob(self, scores: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """Lower-band P(correct) for ``scores`` (n,) predicted as ``predicted`` (n,)."""
        z = _logit(scores)
        out = np.empty(len(z))
        for c in np.unique(predicted):
            m = predicted == c
            out[m] = np.interp(z[m], _GRID, self.lower_band[c])
        return out


def _logit(scores: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(s / (1 - s))


def _fit_platt(z: np.ndarray, cls: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """MAP fit of logit P(correct) = a*z + b + b_cls; prior a~N(1,1), b~N(0,1), b_c~N(0,.5^2).

    The prior centres on "the score is already calibrated" so a class with no calibration
    errors is neither trusted more nor less than its score says. Returns [a, b, b_0..b_C-1].
    """
    n = len(z)
    x = np.zeros((n, 2 + num_classes))
    x[:, 0], x[:, 1] = z, 1.0
    x[np.arange(n), 2 + cls] = 1.0
    prior_mean = np.zeros(2 + num_classes)
    prior_mean[0] = 1.0
    prior_prec = np.full(2 + num_classes, 4.0)
    prior_prec[:2] = 1.0

    def log_post(w: np.ndarray) -> float:
        eta = x @ w
        return float(y @ eta - np.logaddexp(0, eta).sum() - prior_prec @ (w - prior_mean) ** 2 / 2)

    w = prior_mean.copy()
    for _ in range(100):  # damped Newton: the log-posterior is strictly concave
        p = expit(x @ w)
        grad = x.T @ (y - p) - prior_prec * (w - prior_mean)
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(prior_prec)
        step = np.linalg.solve(hess, grad)
        current = log_post(w)
        while log_post(w + step) < current and np.abs(step).max() > 1e-10:
            step /= 2
        w += step
        if np.abs(step).max() < 1e-8:
            break
    w[0] = max(w[0], 0.0)  # a score that anti-predicts correctness is treated as flat
    return w


def calibrate_thresholds(
    scores: np.ndarray,
    predicted: np.ndarray,
    correct: np.ndarray,
    num_classes: int,
    target_precision: float = 0.99,
    *,
    pool_scores: np.ndarray | None = None,
    pool_predicted: np.ndarray | None = None,
    confidence: float = 0.9,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Calibration:
    """Per-class score thresholds whose accepted samples reach ``target_precision``.

    ``scores`` (m,) float in [0, 1], ``predicted`` (m,) int class ids, ``correct`` (m,) bool:
    held-out predictions. ``pool_scores``/``pool_predicted`` (n,): the samples the thresholds
    will be applied to; precision is estimated over them (default: the calibration set).
    The estimator is described in the module docstring.
    """
    scores = np.asarray(scores, dtype=np.float64)
    predicted = np.asarray(predicted)
    correct = np.asarray(correct, dtype=bool)
    m = len(scores)
    if m == 0 or scores.ndim != 1 or predicted.shape != (m,) or correct.shape != (m,):
        raise InvalidInputError(
            f"scores, predicted, correct must be equal-length non-empty 1-d arrays, got "
            f"{scores.shape}, {predicted.shape}, {correct.shape}"
        )
    _check_labels(predicted, num_classes, "predicted")
    if pool_scores is None:
        pool_scores, pool_predicted = scores, predicted
    elif pool_predicted is None or np.shape(pool_predicted) != np.shape(pool_scores):
        raise InvalidInputError("pool_predicted must be given with the shape of pool_scores")
    pool_scores = np.asarray(pool_scores, dtype=np.float64)
    pool_predicted = np.asarray(pool_predicted)

    z = _logit(scores)
    rng = np.random.default_rng(seed)
    bands = np.empty((n_bootstrap, num_classes, len(_GRID)))
    for b in range(n_bootstrap):
        rows = rng.integers(0, m, m) if b else np.arange(m)  # draw 0 is the full-data fit
        w = _fit_platt(z[rows], predicted[rows], correct[rows].astype(float), num_classes)
        bands[b] = expit(w[0] * _GRID[None, :] + w[1] + w[2:, None])
    lower = np.quantile(bands, 1 - confidence, axis=0) if n_bootstrap > 1 else bands[0]
    # Below the lowest calibration score there is no evidence: trust no more than the score.
    unseen = z.min() > _GRID
    lower[:, unseen] = np.minimum(lower[:, unseen], expit(_GRID[unseen]))
    lower = np.maximum.accumulate(lower, axis=1)  # keep it monotone in the score

    thresholds = np.full(num_classes, np.inf)
    est = np.full(num_classes, np.nan)
    cert = np.full(num_classes, np.nan)
    for c in range(num_classes):
        s = np.sort(pool_scores[pool_predicted == c])[::-1]
        if len(s):
            prec = np.cumsum(np.interp(_logit(s), _GRID, lower[c])) / np.arange(1, len(s) + 1)
            group_end = np.append(s[1:] != s[:-1], True)  # tied scores are all in or all out
            ok = np.flatnonzero((prec >= target_precision) & group_end)
            if len(ok):
                thresholds[c], est[c] = s[ok[-1]], prec[ok[-1]]
        acc = (predicted == c) & (scores >= thresholds[c])
        n_acc, n_ok = int(acc.sum()), int(correct[acc].sum())
        if n_acc:
            cert[c] = beta.ppf(1 - confidence, n_ok, n_acc - n_ok + 1) if n_ok else 0.0
    n_cal = np.bincount(predicted.astype(np.int64), minlength=num_classes)
    return Calibration(thresholds, est, cert, n_cal, lower)


def _check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integer class ids, got dtype {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise InvalidInputError(f"{name} must lie in [0, {num_classes}), got {labels.min()}..")
