import pytest

from flywheel.errors import InvalidInputError
from flywheel.gate import GateConfig, decide_promotion
from flywheel.training import EvalResult


def result(
    accuracy: float, per_class: list[float | None], n: int = 100, per_class_n: int = 1000
) -> EvalResult:
    """``per_class_n`` test images per class (in the confusion matrix's row sums)."""
    confusion = [
        [per_class_n if i == j else 0 for j in range(len(per_class))] for i in range(len(per_class))
    ]
    return EvalResult(accuracy, per_class, 0.0, confusion, n)


CFG = GateConfig(margin=0.01, per_class_tolerance=0.05)


def test_first_model_is_promoted() -> None:
    d = decide_promotion(result(0.5, [0.5, 0.5]), None, CFG)
    assert d.promote and d.champion_accuracy is None


def test_better_model_is_promoted() -> None:
    d = decide_promotion(result(0.95, [0.9, 1.0]), result(0.90, [0.92, 0.88]), CFG)
    assert d.promote
    assert d.accuracy_delta == pytest.approx(0.05)
    assert d.per_class_delta == pytest.approx([-0.02, 0.12])
    assert d.worst_class == 0


def test_worse_or_equal_model_is_refused() -> None:
    assert not decide_promotion(result(0.85, [0.8, 0.9]), result(0.90, [0.9, 0.9]), CFG).promote
    tie = decide_promotion(result(0.90, [0.9, 0.9]), result(0.90, [0.9, 0.9]), CFG)
    assert not tie.promote and "margin" in tie.reason


def test_class_regression_blocks_a_better_average() -> None:
    d = decide_promotion(result(0.95, [0.80, 1.0, None]), result(0.90, [0.90, 0.9, None]), CFG)
    assert not d.promote
    assert d.worst_class == 0 and "class 0 regresses" in d.reason
    assert d.per_class_delta[2] is None


def test_small_class_drops_within_noise_do_not_block() -> None:
    """3 of 54 images (5.6 points) is within sampling noise; 12 of 54 is not."""
    champion = result(0.95, [0.98, 0.92], per_class_n=54)
    noisy = decide_promotion(result(0.97, [0.926, 1.0], per_class_n=54), champion, CFG)
    assert noisy.promote, noisy.reason
    real = decide_promotion(result(0.97, [0.76, 1.0], per_class_n=54), champion, CFG)
    assert not real.promote and "noise bound" in real.reason


def test_different_eval_sets_are_an_error() -> None:
    with pytest.raises(InvalidInputError):
        decide_promotion(result(0.9, [0.9], n=10), result(0.8, [0.8], n=11), CFG)
