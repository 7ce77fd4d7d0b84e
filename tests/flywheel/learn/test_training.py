"""Classifier training (weighted, FixMatch switch) and evaluation against hand computations."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from flywheel.learn.backbones import AugmentConfig, build_backbone
from flywheel.learn.training import (
    TrainConfig,
    ema_decay_at,
    ema_update,
    evaluate,
    train_classifier,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target


def small_config(**kw) -> TrainConfig:
    weak = AugmentConfig(degrees=5, translate=0.1, scale=(0.95, 1.05), shear=0)
    base = TrainConfig(
        width=8,
        epochs=10,
        batch_size=32,
        min_steps_per_epoch=1,
        lr=5e-3,
        weak=weak,
        device="cpu",
        strong=replace(weak, degrees=12, brightness=0.3, erase_prob=0.3),
    )
    return replace(base, **kw)


def test_evaluate_matches_hand_computation():
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # true 0, pred 0, conf 0.9
            [0.2, 0.7, 0.1],  # true 1, pred 1, conf 0.7
            [0.6, 0.3, 0.1],  # true 1, pred 0, conf 0.6
            [0.1, 0.3, 0.6],  # true 2, pred 2, conf 0.6
        ]
    )
    labels = np.array([0, 1, 1, 2])
    r = evaluate(probs, labels, num_classes=3, n_bins=10)
    assert r.accuracy == pytest.approx(0.75)
    assert r.per_class_accuracy == pytest.approx([1.0, 0.5, 1.0])
    assert r.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # bins: (0.8,0.9] {0.9: acc 1}; (0.6,0.7] {0.7: acc 1}; (0.5,0.6] {0.6 wrong, 0.6 right}
    ece = 0.25 * abs(1 - 0.9) + 0.25 * abs(1 - 0.7) + 0.5 * abs(0.5 - 0.6)
    assert r.ece == pytest.approx(ece)
    assert r.n == 4


def test_evaluate_marks_absent_class_and_perfect_calibration():
    probs = np.eye(3)[[0, 1, 1]]
    r = evaluate(probs, np.array([0, 1, 1]), num_classes=3)
    assert r.per_class_accuracy == [1.0, 1.0, None]
    assert r.ece == pytest.approx(0.0) and r.accuracy == 1.0
    with pytest.raises(ValueError):
        evaluate(probs, np.array([0, 1]), num_classes=3)


def test_tiny_classifier_learns_digits_well_above_chance(digits):
    x, y = digits
    seen = []
    clf = train_classifier(
        x[:300], y[:300], None, small_config(), num_classes=10, progress=lambda *a: seen.append(a)
    )
    probs = clf.predict_proba(x[1000:1300])
    assert probs.shape == (300, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    result = evaluate(probs, y[1000:1300], 10)
    assert result.accuracy > 0.7  # chance is 0.1
    assert len(seen) == 10 and clf.losses[-1] < clf.losses[0]


def test_zero_weight_samples_do_not_teach(digits):
    x, y = digits
    wrong = (y[:200] + 1) % 10  # a systematic mislabelling the model could learn
    xs, ys = np.concatenate([x[:200], x[:200]]), np.concatenate([y[:200], wrong])
    test_x, test_y = x[1000:1300], y[1000:1300]
    cfg = small_config(epochs=8)

    def acc(weights):
        clf = train_classifier(xs, ys, weights, cfg, num_classes=10)
        return evaluate(clf.predict_proba(test_x), test_y, 10).accuracy

    ignored = acc(np.concatenate([np.ones(200), np.zeros(200)]))
    trusted = acc(np.ones(400))
    assert ignored > 0.6
    assert ignored > trusted + 0.2


def test_fixmatch_switch_runs_and_is_deterministic(digits):
    x, y = digits
    cfg = small_config(
        epochs=3, fixmatch=True, steps_per_epoch=4, fixmatch_mu=2, fixmatch_threshold=0.5
    )
    a = train_classifier(x[:100], y[:100], None, cfg, 10, unlabeled_images=x[100:400])
    b = train_classifier(x[:100], y[:100], None, cfg, 10, unlabeled_images=x[100:400])
    plain = train_classifier(x[:100], y[:100], None, replace(cfg, fixmatch=False), 10)
    pa, pb = a.predict_proba(x[500:600]), b.predict_proba(x[500:600])
    np.testing.assert_array_equal(pa, pb)
    # The unlabeled term changes the result (it is not silently ignored).
    assert not np.allclose(pa, plain.predict_proba(x[500:600]))


def test_init_backbone_state_is_loaded(digits):
    x, y = digits
    bb = build_backbone("small_cnn", 1, None, width=8)
    torch.nn.init.constant_(bb.trunk.features[0].weight, 0.25)
    clf = train_classifier(
        x[:20], y[:20], None, small_config(epochs=0), 10, init_backbone_state=bb.state_dict()
    )
    assert torch.equal(clf.model.backbone.trunk.features[0].weight, bb.trunk.features[0].weight)
    feats = clf.embed(x[:5], device="cpu")
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_bad_labels_are_refused(digits):
    x, y = digits
    with pytest.raises(ValueError, match="labels"):
        train_classifier(x[:10], np.full(10, 10), None, small_config(epochs=1), 10)
    with pytest.raises(ValueError, match="lengths"):
        train_classifier(x[:10], y[:9], None, small_config(epochs=1), 10)


def test_ema_update_matches_hand_computation():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
    ema = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        ema[0].weight.fill_(1.0)
        model[1].running_mean.fill_(4.0)
        ema[1].running_mean.fill_(0.0)
        model[1].num_batches_tracked.fill_(7)
    ema_update(ema, model, 0.9)
    assert ema[0].weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    assert ema[1].running_mean.item() == pytest.approx(0.1 * 4.0)
    assert ema[1].num_batches_tracked.item() == 7  # counts are copied, not averaged
    assert model[0].weight.item() == 2.0


def test_ema_decay_warms_up_then_holds():
    assert ema_decay_at(0, 0.99) == pytest.approx(1 / 10)
    assert ema_decay_at(8, 0.99) == pytest.approx(9 / 18)
    assert ema_decay_at(10_000, 0.99) == 0.99


def test_ema_model_is_returned_and_tracks_the_weights(digits):
    x, y = digits
    cfg = small_config(epochs=2, steps_per_epoch=4)
    last = train_classifier(x[:100], y[:100], None, cfg, 10)
    averaged = train_classifier(x[:100], y[:100], None, replace(cfg, ema_decay=0.9), 10)
    # A vanishing decay follows the weights: the same model as no average at all.
    tracking = train_classifier(x[:100], y[:100], None, replace(cfg, ema_decay=1e-12), 10)
    w_last = last.model.head.weight
    assert not torch.allclose(averaged.model.head.weight, w_last)
    torch.testing.assert_close(tracking.model.head.weight, w_last)
    probs = averaged.predict_proba(x[:20])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
