import pytest

from flywheel.errors import InvalidInputError
from flywheel.learn.gate import GateConfig, decide_promotion
from flywheel.learn.training import EvalResult


def result(accuracy: float, recall: list[float | None], per_class_n: int = 1000) -> EvalResult:
    """An evaluation whose class c keeps round(recall[c] * n) images and sends the rest to
    class c + 1 (None: the class has no test images)."""
    k = len(recall)
    confusion = [[0] * k for _ in range(k)]
    for c, r in enumerate(recall):
        if r is not None:
            confusion[c][c] = round(r * per_class_n)
            confusion[c][(c + 1) % k] += per_class_n - confusion[c][c]
    n = sum(map(sum, confusion))
    return EvalResult(accuracy, recall, 0.0, confusion, n)


CFG = GateConfig(margin=0.01, per_class_tolerance=0.05)


def test_first_model_is_promoted() -> None:
    d = decide_promotion(result(0.5, [0.5, 0.5]), None, CFG)
    assert d.promote and d.champion_accuracy is None


def test_better_model_is_promoted() -> None:
    d = decide_promotion(result(0.95, [0.9, 1.0]), result(0.90, [0.92, 0.88]), CFG)
    assert d.promote
    assert d.accuracy_delta == pytest.approx(0.05)
    # F1 by hand: champion 1840/2040, 1760/1960; candidate 1800/1900, 2000/2100.
    expected = [1800 / 1900 - 1840 / 2040, 2000 / 2100 - 1760 / 1960]
    assert d.per_class_delta == pytest.approx(expected)
    assert d.worst_class == 0


def test_worse_or_equal_model_is_refused() -> None:
    assert not decide_promotion(result(0.85, [0.8, 0.9]), result(0.90, [0.9, 0.9]), CFG).promote
    tie = decide_promotion(result(0.90, [0.9, 0.9]), result(0.90, [0.9, 0.9]), CFG)
    assert not tie.promote and "margin" in tie.reason


def test_class_regression_blocks_a_better_average() -> None:
    d = decide_promotion(result(0.95, [0.80, 1.0, None]), result(0.90, [0.90, 0.9, None]), CFG)
    assert not d.promote
    assert d.worst_class == 0 and "class 0 F1 regresses" in d.reason
    assert d.per_class_delta[2] is None


def test_small_class_drops_within_noise_do_not_block() -> None:
    """A few of 54 images is within sampling noise; 16 of 54 is not."""
    champion = result(0.95, [0.98, 0.92], per_class_n=54)
    noisy = decide_promotion(result(0.97, [0.926, 1.0], per_class_n=54), champion, CFG)
    assert noisy.promote, noisy.reason
    real = decide_promotion(result(0.97, [0.70, 1.0], per_class_n=54), champion, CFG)
    assert not real.promote and "noise bound" in real.reason


def test_fixing_an_over_predicted_class_is_not_a_regression() -> None:
    """A weak champion that dumps class 1 into class 0 has 100 % recall on class 0; a model
    that fixes it loses a little class-0 recall but gains F1 there: promoted."""
    champion = EvalResult(0.6, [1.0, 0.2], 0.0, [[50, 0], [40, 10]], 100)
    candidate = EvalResult(0.9, [0.92, 0.88], 0.0, [[46, 4], [6, 44]], 100)
    d = decide_promotion(candidate, champion, CFG)
    assert d.promote, d.reason
    assert d.per_class_delta[0] > 0  # F1 of class 0 went up although its recall fell


def test_different_eval_sets_are_an_error() -> None:
    with pytest.raises(InvalidInputError):
        decide_promotion(
            result(0.9, [0.9], per_class_n=10), result(0.8, [0.8], per_class_n=11), CFG
        )
