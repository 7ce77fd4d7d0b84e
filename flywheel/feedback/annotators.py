"""Inter-annotator agreement: Cohen's kappa per pair, Fleiss' kappa over all raters.

Pure functions over plain labels. Every statistic is ``None`` where it is undefined (too
few shared items, or chance agreement of 1 because everyone used a single category), never
NaN, so results serialise to JSON as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from flywheel.errors import InvalidInputError

# Below this, 1 - p_e counts as 0: kappa is 0/0 (all raters used one category).
_EPS = 1e-12


@dataclass
class PairKappa:
    annotator_a: str  # annotator_a < annotator_b
    annotator_b: str
    n_items: int  # items both labeled
    kappa: float | None  # None below the minimum overlap or where undefined


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items (``a[i]`` and ``b[i]`` rate item i).

    ``(p_o - p_e) / (1 - p_e)`` with p_e from each rater's own label shares; None for no
    items or when p_e is 1 (both raters used one and the same category throughout).
    """
    if len(a) != len(b):
        raise InvalidInputError(f"cohen_kappa needs equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if 1.0 - p_e < _EPS:
        return None
    return float((p_o - p_e) / (1.0 - p_e))


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa where each item may have its own number of raters.

    ``ratings[i]`` holds the labels item i received; items with fewer than 2 are skipped.
    Per item ``P_i = (sum_k n_ik^2 - n_i) / (n_i (n_i - 1))``, ``P_bar`` their plain mean,
    ``p_k`` the share of all ratings in category k, ``P_e = sum_k p_k^2``. With the same
    number of raters everywhere this is exactly Fleiss (1971). None when no item has 2
    ratings or P_e is 1.
    """
    rated = [r for r in ratings if len(r) >= 2]
    if not rated:
        return None
    totals: Counter[str] = Counter()
    p_bar = 0.0
    for r in rated:
        counts = Counter(r)
        totals.update(counts)
        n = len(r)
        p_bar += (sum(c * c for c in counts.values()) - n) / (n * (n - 1))
    p_bar /= len(rated)
    n_all = sum(totals.values())
    p_e = sum((c / n_all) ** 2 for c in totals.values())
    if 1.0 - p_e < _EPS:
        return None
    return float((p_bar - p_e) / (1.0 - p_e))


def pairwise_kappa(
    ratings: Mapping[str, Mapping[str, str]], min_overlap: int = 2
) -> list[PairKappa]:
    """Cohen's kappa for every pair of annotators that share at least one item.

    ``ratings`` maps annotator -> {item: label}. Pairs sharing fewer than ``min_overlap``
    items are listed with ``kappa=None`` (one shared item says nothing about chance).
    Sorted by (annotator_a, annotator_b).
    """
    if min_overlap < 1:
        raise InvalidInputError(f"min_overlap must be >= 1, got {min_overlap}")
    out = []
    for x, y in combinations(sorted(ratings), 2):
        shared = sorted(ratings[x].keys() & ratings[y].keys())
        if not shared:
            continue
        kappa = (
            cohen_kappa([ratings[x][i] for i in shared], [ratings[y][i] for i in shared])
            if len(shared) >= min_overlap
            else None
        )
        out.append(PairKappa(x, y, len(shared), kappa))
    return out


def ratings_by_item(ratings: Mapping[str, Mapping[str, str]]) -> dict[str, list[str]]:
    """annotator -> {item: label} turned around to item -> [labels] (the Fleiss input)."""
    by_item: dict[str, list[str]] = {}
    for annotator in sorted(ratings):
        for item, label in ratings[annotator].items():
            by_item.setdefault(item, []).append(label)
    return by_item
