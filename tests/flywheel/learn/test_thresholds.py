"""Class-adaptive consistency thresholds, against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from flywheel.learn.thresholds import ConsistencyThresholds


def test_fixed_keeps_rows_at_or_above_the_threshold() -> None:
    t = ConsistencyThresholds("fixed", 2, 3, threshold=0.9)
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9]])
    assert t.mask(probs).tolist() == [1.0, 0.0, 1.0]


def test_flexmatch_lowers_the_threshold_of_classes_little_learned() -> None:
    # Pool of 4; before any confident prediction every class is at 0 effect: threshold 0.
    t = ConsistencyThresholds("flexmatch", 2, 4, threshold=0.9)
    assert t.class_thresholds().tolist() == [0.0, 0.0]
    # Samples 0 and 1 confidently class 0; sample 2 class 1 below 0.9: not counted.
    probs = torch.tensor([[0.95, 0.05], [0.92, 0.08], [0.2, 0.8]])
    assert t.mask(probs, torch.tensor([0, 1, 2])).tolist() == [1.0, 1.0, 1.0]
    # sigma = [2, 0], unused = 2 -> beta = [2/2, 0] -> T = 0.9 * beta / (2 - beta)
    assert t.class_thresholds().tolist() == pytest.approx([0.9, 0.0])
    # Sample 2 now confident class 1; sample 3 class 0: sigma [3, 1], unused 0 -> beta [1, 1/3]
    t.mask(torch.tensor([[0.05, 0.95], [0.97, 0.03]]), torch.tensor([2, 3]))
    beta = 1 / 3
    assert t.class_thresholds().tolist() == pytest.approx([0.9, 0.9 * beta / (2 - beta)])
    # A class-1 row at 0.6 passes its lowered threshold (0.27); a class-0 row at 0.6 does not.
    assert t.mask(torch.tensor([[0.4, 0.6], [0.6, 0.4]]), torch.tensor([0, 1])).tolist() == [
        1.0,
        0.0,
    ]


def test_flexmatch_needs_the_pool_positions() -> None:
    with pytest.raises(ValueError, match="pool positions"):
        ConsistencyThresholds("flexmatch", 2, 4).mask(torch.tensor([[0.5, 0.5]]))


def test_freematch_tracks_mean_confidence_per_class() -> None:
    t = ConsistencyThresholds("freematch", 2, 10, momentum=0.5)
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
    keep = t.mask(probs)
    # global: 0.5 * 0.5 + 0.5 * mean(0.9, 0.7) = 0.65; class probs: 0.5*0.5 + 0.5*[0.8, 0.2]
    # = [0.65, 0.35]; thresholds = 0.65 * [0.65, 0.35] / 0.65 = [0.65, 0.35]
    assert t.class_thresholds().tolist() == pytest.approx([0.65, 0.35])
    assert keep.tolist() == [1.0, 1.0]  # 0.9 and 0.7 both reach 0.65
    assert t.mask(torch.tensor([[0.6, 0.4]])).tolist() == [0.0]  # now above 0.6


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown threshold mode"):
        ConsistencyThresholds("sometimes", 2, 1)  # type: ignore[arg-type]


def test_priming_starts_from_a_trained_models_view_of_the_pool() -> None:
    t = ConsistencyThresholds("flexmatch", 2, 3, threshold=0.9)
    t.prime(torch.tensor([[0.95, 0.05], [0.97, 0.03], [0.5, 0.5]]))
    # sigma = [2, 0], unused = 1 -> beta = [1, 0]: class 0 keeps the full threshold at once.
    assert t.class_thresholds().tolist() == pytest.approx([0.9, 0.0])
    f = ConsistencyThresholds("freematch", 2, 3)
    f.prime(torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]]))
    # global = mean(0.9, 0.7, 0.5) = 0.7; class probs [0.7, 0.3] -> thresholds [0.7, 0.3]
    assert f.class_thresholds().tolist() == pytest.approx([0.7, 0.3])
