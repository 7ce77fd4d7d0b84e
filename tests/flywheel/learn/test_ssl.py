"""Self-supervised losses against hand-computed references; resume, abort and embed."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from flywheel.learn.backbones import AugmentConfig
from flywheel.learn.ssl.embed import embed
from flywheel.learn.ssl.loop import CHECKPOINT_NAME, NonFiniteLossError, SSLConfig, train_ssl
from flywheel.learn.ssl.simclr import nt_xent_loss
from flywheel.learn.ssl.swav import sinkhorn, swav_loss

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    d = load_digits()
    return np.round(d.images[:48] * (255 / 16)).astype(np.uint8)


def tiny_config(**kw) -> SSLConfig:
    base = SSLConfig(
        width=4,
        hidden_dim=16,
        embedding_dim=8,
        epochs=3,
        batch_size=16,
        warmup_epochs=1,
        augment=AugmentConfig(),
        device="cpu",
        seed=1,
    )
    return replace(base, **kw)


def nt_xent_numpy(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    losses = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        logits = np.array([z[i] @ z[k] / t for k in range(2 * n) if k != i])
        others = [k for k in range(2 * n) if k != i]
        losses.append(-(z[i] @ z[pos] / t) + np.log(np.exp(logits).sum()))
        assert pos in others
    return float(np.mean(losses))


@pytest.mark.parametrize("n", [2, 3])
def test_nt_xent_matches_hand_computed_reference(n):
    rng = np.random.default_rng(n)
    z1, z2 = rng.normal(size=(n, 5)), rng.normal(size=(n, 5))
    got = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), temperature=0.5).item()
    assert got == pytest.approx(nt_xent_numpy(z1, z2, 0.5), rel=1e-5)


def test_nt_xent_two_pairs_by_hand():
    # Orthogonal unit vectors: each anchor sees its positive at cos 1, negatives at cos 0.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 1.0
    # logits for an anchor: positive e^1, negatives e^0 (other pair, twice: view 1 and 2)
    expected = -np.log(np.e / (np.e + 2.0))
    assert nt_xent_loss(z1, z1.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_sinkhorn_codes_are_balanced_distributions():
    scores = torch.randn(12, 4)
    q = sinkhorn(scores, eps=0.5, iters=50)
    assert torch.allclose(q.sum(1), torch.ones(12), atol=1e-5)
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0), atol=1e-3)


def test_swav_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    s1, s2 = rng.uniform(-1, 1, (6, 3)), rng.uniform(-1, 1, (6, 3))
    got = swav_loss(torch.tensor(s1), torch.tensor(s2), temperature=0.1, eps=0.05).item()

    def codes(s):
        q = np.exp((s - s.max()) / 0.05).T
        q /= q.sum()
        for _ in range(3):
            q /= q.sum(1, keepdims=True) * 3
            q /= q.sum(0, keepdims=True) * 6
        return (q * 6).T

    def log_softmax(s):
        a = s / 0.1
        return a - np.log(np.exp(a).sum(1, keepdims=True))

    ref = -0.5 * (
        (codes(s1) * log_softmax(s2)).sum(1).mean() + (codes(s2) * log_softmax(s1)).sum(1).mean()
    )
    assert got == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(("method", "workers"), [("simclr", 0), ("swav", 0), ("swav", 1)])
def test_resume_after_interruption_gives_same_weights(digits, tmp_path, method, workers):
    # workers=1: augmentations run in a DataLoader worker process, seeded per epoch.
    cfg = tiny_config(method=method, num_workers=workers)
    seen: list[tuple[int, int, float]] = []
    full = train_ssl(digits, cfg, tmp_path / "full", progress=lambda *a: seen.append(a))
    assert [s[0] for s in seen] == [1, 2, 3] and len(full.losses) == 3

    class Crash(RuntimeError):
        pass

    def crash_after_first(epoch, epochs, loss):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train_ssl(digits, cfg, tmp_path / "cut", progress=crash_after_first)
    assert (tmp_path / "cut" / CHECKPOINT_NAME).exists()
    resumed = train_ssl(digits, cfg, tmp_path / "cut")
    assert resumed.resumed_from_epoch == 1 and full.resumed_from_epoch == 0
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    for (k, a), b in zip(
        full.backbone.state_dict().items(), resumed.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    # A run that continues a finished checkpoint trains nothing more and changes nothing.
    again = train_ssl(digits, cfg, tmp_path / "full")
    assert again.resumed_from_epoch == 3
    assert torch.equal(
        next(iter(again.backbone.parameters())), next(iter(full.backbone.parameters()))
    )


def test_different_seed_gives_different_weights(digits):
    a = train_ssl(digits, tiny_config(epochs=1), None)
    b = train_ssl(digits, tiny_config(epochs=1, seed=2), None)
    pa, pb = next(a.backbone.parameters()), next(b.backbone.parameters())
    assert not torch.equal(pa, pb)


def test_checkpoint_of_another_config_is_refused(digits, tmp_path):
    train_ssl(digits, tiny_config(epochs=1), tmp_path)
    with pytest.raises(ValueError, match="another config"):
        train_ssl(digits, tiny_config(epochs=1, lr=1e-2), tmp_path)


def test_non_finite_loss_aborts_without_checkpoint(digits, tmp_path):
    # An infinite learning rate makes the weights non-finite after the first step.
    with pytest.raises(NonFiniteLossError, match="epoch 1"):
        train_ssl(digits, tiny_config(lr=float("inf")), tmp_path)
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_embed_returns_unit_float32_rows(digits):
    result = train_ssl(digits, tiny_config(epochs=1), None)
    feats = embed(result.backbone, digits[:10], batch_size=4, device="cpu")
    assert feats.shape == (10, result.backbone.out_dim) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    # Batching must not change the answer (eval-mode BatchNorm, no augmentation).
    np.testing.assert_allclose(feats, embed(result.backbone, digits[:10], batch_size=10), atol=1e-6)
    assert result.backbone.training is False  # mode is restored after embedding
    proj = embed(result.encoder, digits[:3], device="cpu")
    assert proj.shape == (3, 8)
    assert embed(result.encoder, digits[:0], device="cpu").shape == (0, 8)


def test_warmup_is_at_most_a_quarter_of_a_short_run() -> None:
    from flywheel.learn.ssl.loop import warmup_steps

    assert warmup_steps(10, 20, 5) == 50  # a long run keeps its 5 epochs
    assert warmup_steps(10, 2, 5) == 5  # 20 steps: a quarter, then 15 of decay
    assert warmup_steps(7, 1, 5) == 1
