"""Drift watch: do recent inputs still look like what the champion was trained on?

Both sets are embedded with the champion's own backbone (the served model's view of an
input) and compared two ways:

- MMD² (maximum mean discrepancy, unbiased estimate, Gaussian kernel with the median
  heuristic bandwidth) with a permutation test: a distance between the two distributions
  and the chance of seeing one that large if nothing had changed;
- a kNN distance ratio: how far recent inputs sit from their nearest training inputs,
  relative to how far training inputs sit from each other (about 1: same density; well
  above 1: recent inputs land where the model saw no data).

The decision needs both the test and a size: ``drifted = mmd > mmd_threshold and p < 0.05``.
With hundreds of inputs a permutation test alone flags shifts too small to matter. The
threshold (``DriftSettings.mmd_threshold``, 0.01) is about the 99th percentile of MMD²
without drift at the smallest window (50 unseen digits against the champion's training
digits, ``bench/bench_drift.py``); no draw without drift was flagged there, and inverted,
dimmed or rotated inputs and a two-class mix were (BENCHMARKS.md, section 10).
The kNN ratio is reported, not decided on: a new mix of familiar inputs leaves it at ~1.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sqlalchemy import func, select

from flywheel.config import DriftSettings
from flywheel.db import Label, Prediction, Sample
from flywheel.db.labels import is_current
from flywheel.db.models import Split, utcnow
from flywheel.errors import InvalidInputError
from flywheel.learn.backbones import Classifier
from flywheel.learn.data import ModelInput, load_images, sample_input_size
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.ssl.embed import embed
from flywheel.workspace import Workspace

P_VALUE = 0.05
PERMUTATIONS = 200
_MEDIAN_SAMPLE = 1000  # points the bandwidth's median distance is estimated from
_PERM_BATCH = 50  # permutations per matrix product: bounds memory to (n + m) x 50


@dataclass(frozen=True)
class DriftReport:
    recent: int  # recent inputs compared
    reference: int  # training inputs compared
    mmd: float  # unbiased MMD², Gaussian kernel
    p_value: float  # permutation test of "same distribution"
    knn_ratio: float  # ~1: no drift; > 1: recent inputs far from training data
    drifted: bool
    threshold: float  # the MMD² threshold the decision used
    model_version: str  # the champion whose features were compared
    computed_at: datetime


# --- statistics ------------------------------------------------------------------------------
def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def median_gamma(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Median heuristic: gamma = 1 / (2 median²) of the pooled pairwise distances, so the
    kernel k(a, b) = exp(-gamma |a - b|²) has the data's own length scale."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    if len(pooled) > _MEDIAN_SAMPLE:
        pooled = pooled[np.random.default_rng(seed).choice(len(pooled), _MEDIAN_SAMPLE, False)]
    d = _sq_dists(pooled, pooled)[np.triu_indices(len(pooled), 1)]
    med = float(np.median(d)) if len(d) else 0.0
    return 1.0 / (2.0 * med) if med > 0 else 1.0


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InvalidInputError(f"need two (n, d) arrays of one d, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise InvalidInputError("MMD needs at least two samples on each side")
    return x, y


def _mmd_from_kernel(k: np.ndarray, in_x: np.ndarray) -> np.ndarray:
    """Unbiased MMD² for each column of ``in_x`` (bool (N, P): which pooled rows are x).

    With a, b the indicator vectors of x and y: sums over blocks are a'Ka, b'Kb, a'Kb, and
    the diagonal (k(z, z) = 1) is left out of the within-set means.
    """
    a = in_x.astype(np.float64)
    n = a[:, 0].sum()
    m = len(a) - n
    ka = k @ a
    k1 = k.sum(axis=1, keepdims=True)
    s_xx = (a * ka).sum(0)
    s_xy = (a * (k1 - ka)).sum(0)
    s_yy = k1.sum() - 2 * s_xy - s_xx
    return (s_xx - n) / (n * (n - 1)) + (s_yy - m) / (m * (m - 1)) - 2 * s_xy / (n * m)


def mmd_rbf(x: np.ndarray, y: np.ndarray, gamma: float | None = None) -> float:
    """Unbiased MMD² between samples ``x`` (n, d) and ``y`` (m, d); Gaussian kernel with
    ``gamma`` (None: the median heuristic). About 0 (can be slightly negative) when both
    come from one distribution."""
    x, y = _check(x, y)
    g = median_gamma(x, y) if gamma is None else gamma
    k_xx = np.exp(-g * _sq_dists(x, x))
    k_yy = np.exp(-g * _sq_dists(y, y))
    k_xy = np.exp(-g * _sq_dists(x, y))
    n, m = len(x), len(y)
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(xx + yy - 2 * k_xy.mean())


def mmd_permutation_p_value(
    x: np.ndarray,
    y: np.ndarray,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    gamma: float | None = None,
) -> float:
    """Share of random relabelings of the pooled samples whose MMD² is at least the
    observed one (with the +1 correction, so never 0): small means "not the same data"."""
    x, y = _check(x, y)
    g = median_gamma(x, y) if gamma is None else gamma
    pooled = np.concatenate([x, y])
    k = np.exp(-g * _sq_dists(pooled, pooled))
    n, total = len(x), len(pooled)
    observed = np.zeros((total, 1), dtype=bool)
    observed[:n] = True
    stat = _mmd_from_kernel(k, observed)[0]
    rng = np.random.default_rng(seed)
    at_least = 0
    for start in range(0, permutations, _PERM_BATCH):
        size = min(_PERM_BATCH, permutations - start)
        in_x = np.zeros((total, size), dtype=bool)
        for j in range(size):
            in_x[rng.permutation(total)[:n], j] = True
        at_least += int((_mmd_from_kernel(k, in_x) >= stat - 1e-12).sum())
    return (1 + at_least) / (1 + permutations)


def knn_distance_ratio(reference: np.ndarray, recent: np.ndarray, k: int = 10) -> float:
    """Mean distance of recent inputs to their k nearest reference inputs, over the same
    for reference inputs (leaving each one out): ~1 means no drift."""
    reference, recent = np.asarray(reference), np.asarray(recent)
    if len(reference) < 2 or len(recent) == 0:
        raise InvalidInputError("need at least two reference and one recent input")
    k = min(k, len(reference) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(reference)
    own = nn.kneighbors(reference, k + 1, return_distance=True)[0][:, 1:]  # first is itself
    theirs = nn.kneighbors(recent, k, return_distance=True)[0]
    base = float(own.mean())
    if base == 0.0:  # duplicates only: any distance at all is infinitely farther
        return 1.0 if float(theirs.mean()) == 0.0 else float("inf")
    return float(theirs.mean()) / base


# --- the workspace ---------------------------------------------------------------------------
def _recent_sample_ids(ws: Workspace, limit: int) -> list[str]:
    """Distinct samples of the newest predictions, newest first."""
    newest = func.max(Prediction.created_at)
    with ws.db.session() as s:
        return list(
            s.scalars(
                select(Prediction.sample_id)
                .group_by(Prediction.sample_id)
                .order_by(newest.desc(), Prediction.sample_id)
                .limit(limit)
            )
        )


def _training_sample_ids(ws: Workspace) -> list[str]:
    """Samples with a current label of any source outside the test split: what a champion
    is trained on."""
    with ws.db.session() as s:
        return sorted(
            s.scalars(
                select(Label.sample_id)
                .join(Sample, Sample.id == Label.sample_id)
                .where(is_current(), Sample.split != Split.TEST.value)
            )
        )


def measure_drift(
    ws: Workspace, registry: ModelRegistry, settings: DriftSettings, seed: int = 0
) -> DriftReport | None:
    """Compare the newest ``settings.recent`` predicted inputs with ``settings.reference``
    random training inputs in the champion's feature space.

    None without a champion, or with fewer than ``settings.min_recent`` recent inputs or
    reference inputs. An input that is both recent and in the training set counts as
    recent only (the same image on both sides would hide a drift).
    """
    champion = registry.champion()
    if champion is None:
        return None
    recent_ids = _recent_sample_ids(ws, settings.recent)
    if len(recent_ids) < settings.min_recent:
        return None
    recent_set = set(recent_ids)
    pool = [sid for sid in _training_sample_ids(ws) if sid not in recent_set]
    if len(pool) < settings.min_recent:
        return None
    rng = np.random.default_rng(seed)
    take = min(settings.reference, len(pool))
    reference_ids = [pool[i] for i in sorted(rng.choice(len(pool), take, replace=False))]

    model = registry.load(champion.version)
    if not isinstance(model, Classifier):
        raise InvalidInputError(f"champion {champion.version} is not a flywheel Classifier")
    learning = ws.settings.learning
    # The input the champion was trained on (its tags); a model older than those tags: the
    # settings, the size derived from the samples when they leave it open.
    spec = ModelInput.from_dict(champion.tags) or ModelInput(
        learning.image_size or sample_input_size(ws.db, reference_ids),
        learning.channels or 1,  # a model without input tags predates colour support
        learning.resize,
    )

    def features(ids: list[str]) -> np.ndarray:
        images, _ = load_images(ws.blobs, ids, spec)  # an unreadable input is left out
        return embed(model.backbone, images, device=learning.device)

    recent, reference = features(recent_ids), features(reference_ids)
    gamma = median_gamma(recent, reference, seed)
    mmd = mmd_rbf(recent, reference, gamma)
    p_value = mmd_permutation_p_value(recent, reference, PERMUTATIONS, seed, gamma)
    return DriftReport(
        recent=len(recent_ids),
        reference=len(reference_ids),
        mmd=mmd,
        p_value=p_value,
        knn_ratio=knn_distance_ratio(reference, recent),
        drifted=bool(mmd > settings.mmd_threshold and p_value < P_VALUE),
        threshold=settings.mmd_threshold,
        model_version=champion.version,
        computed_at=utcnow(),
    )
