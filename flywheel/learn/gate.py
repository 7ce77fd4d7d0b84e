"""The promotion gate: a candidate replaces the champion only if it is measurably better.

Both models are scored on the same frozen evaluation set (the test split, never trained
on). The candidate must beat the champion's accuracy by ``margin`` and may not lose more
than ``per_class_tolerance`` on any single class: a better average that sacrifices one class
is not an improvement a product team wants. Classes are compared by F1, not recall: a
weak model that sends everything to one class has 100 % recall there, and a better model
that stops doing so must not look like a regression of that class. With ~50 test images a
class, three images are six points, so a class drop only blocks when it is also larger
than sampling noise: beyond ``z`` standard errors (binomial approximation over the class's
test images; one-sided, 95 % by default).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from flywheel.errors import InvalidInputError
from flywheel.learn.training import EvalResult


@dataclass(frozen=True)
class GateConfig:
    margin: float = 0.001  # accuracy points (0..1); > 0 so that a tie is not a promotion
    # With ~50 test images a class, one image is 2 points: 0.05 tolerates sampling noise,
    # not a real regression.
    per_class_tolerance: float = 0.05
    z: float = 1.645  # one-sided 95 %: how many standard errors a class drop must exceed


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    candidate_accuracy: float
    champion_accuracy: float | None
    accuracy_delta: float | None
    per_class_delta: list[float | None]  # F1, candidate - champion, per class
    worst_class: int | None  # the class that lost most (None without a champion)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_class_f1(confusion: list[list[int]]) -> list[float | None]:
    """F1 per class from a [true][predicted] count matrix; None for a class with no images."""
    out: list[float | None] = []
    for c, row in enumerate(confusion):
        support, predicted = sum(row), sum(r[c] for r in confusion)
        out.append(2 * row[c] / (support + predicted) if support else None)
    return out


def decide_promotion(
    candidate: EvalResult, champion: EvalResult | None, config: GateConfig
) -> GateDecision:
    """Compare two evaluations of the same frozen set; the first model always passes."""
    if champion is None:
        return GateDecision(
            True,
            "no champion yet: the first model is promoted",
            candidate.accuracy,
            None,
            None,
            [None] * len(candidate.per_class_accuracy),
            None,
        )
    if candidate.n != champion.n or len(candidate.confusion) != len(champion.confusion):
        raise InvalidInputError("gate: candidate and champion were scored on different sets")
    cand_f1, champ_f1 = per_class_f1(candidate.confusion), per_class_f1(champion.confusion)
    deltas = [
        None if c is None or p is None else c - p for c, p in zip(cand_f1, champ_f1, strict=True)
    ]
    support = [sum(row) for row in candidate.confusion]
    known = [(d, i) for i, d in enumerate(deltas) if d is not None]
    worst_class = min(known)[1] if known else None
    regressions = []
    for d, i in sorted(known):
        if d >= -config.per_class_tolerance:
            break
        a, b = cand_f1[i], champ_f1[i]
        assert a is not None and b is not None
        n = max(support[i], 1)
        noise = config.z * math.sqrt((a * (1 - a) + b * (1 - b)) / n)
        if -d > noise:
            regressions.append((d, i, noise))
    delta = candidate.accuracy - champion.accuracy
    if delta < config.margin:
        promote = False
        reason = f"accuracy {delta:+.4f} vs champion is below the {config.margin:.4f} margin"
    elif regressions:
        d, i, noise = regressions[0]
        promote = False
        reason = (
            f"class {i} F1 regresses by {-d:.4f}, over the {config.per_class_tolerance:.4f} "
            f"tolerance and the {noise:.4f} noise bound"
        )
    else:
        promote = True
        reason = f"accuracy {delta:+.4f} vs champion, no class regresses beyond tolerance/noise"
    return GateDecision(
        promote, reason, candidate.accuracy, champion.accuracy, delta, deltas, worst_class
    )
