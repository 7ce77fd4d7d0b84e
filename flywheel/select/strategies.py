"""The selection strategies by name: ``learning.selection`` picks one.

A strategy is a module in ``flywheel/select/`` with a function
``select(inputs: SelectionInputs) -> SelectionOutcome`` and ``MODEL_OPINIONS``, the models
("champion", "latest") whose pool probabilities it asks for, so that a select step fanned out
over shards computes those and no others; adding one is that file plus its line in
``STRATEGIES``. The table names modules instead of importing them, so reading the
settings (which validate the name against it) stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from flywheel.config import LearningSettings
    from flywheel.learn.data import CycleData
    from flywheel.learn.embeddings import EmbeddingChoice
    from flywheel.select.outcome import SelectionOutcome

STRATEGIES: dict[str, str] = {
    # newest model and kNN anchors agree; class-balanced quota growing per cycle
    "agreement": "flywheel.select.agreement",
    # per-class thresholds calibrated on held-out human labels to reach target_precision
    "calibrated": "flywheel.select.calibrated",
}


@dataclass(frozen=True)
class SelectionInputs:
    """What a strategy may use. The models' opinions are computed only when asked for."""

    data: CycleData
    choice: EmbeddingChoice  # the cycle's embedding of labeled, pool and test samples
    learning: LearningSettings
    # (n_pool, C) probabilities of the champion, None when it predicts other classes.
    champion_probs: Callable[[], np.ndarray | None]
    # The same for the newest registered model, promoted or not.
    latest_probs: Callable[[], np.ndarray | None]
    # How many earlier cycles selected pseudo-labels.
    finished_rounds: Callable[[], int]


Strategy = Callable[[SelectionInputs], "SelectionOutcome"]


def check_strategy(name: str) -> str:
    """``name`` if it is a known strategy; ValueError naming the known ones otherwise."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {name!r}: use one of {sorted(STRATEGIES)}")
    return name


def strategy(name: str) -> Strategy:
    """The ``select`` function of strategy ``name``."""
    return importlib.import_module(STRATEGIES[check_strategy(name)]).select


def model_opinions(name: str) -> tuple[str, ...]:
    """The models (``"champion"``, ``"latest"``) whose opinions strategy ``name`` uses."""
    return tuple(importlib.import_module(STRATEGIES[check_strategy(name)]).MODEL_OPINIONS)
