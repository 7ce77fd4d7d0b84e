from pathlib import Path

import numpy as np
import torch
from torch import nn

from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.embeddings import choose_embedding, loo_knn_accuracy


def test_loo_knn_accuracy_on_planted_clusters() -> None:
    x = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99], [0.98, 0.15]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # The last one sits in class 0's cluster: it is wrong by LOO, and it is the nearest
    # neighbour of sample 1 (cos 0.998 vs 0.995 to sample 0), so sample 1 is wrong too.
    y = np.array([0, 0, 1, 1, 1])
    assert loo_knn_accuracy(x, y, k=1) == 0.6


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_choice_by_evidence_and_the_single_label_rule(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    # Two classes of 4x4 images; a "learned" embedding that only sees noise would lose.
    def images(n: int, cls: int) -> np.ndarray:
        base = np.zeros((n, 4, 4), dtype=np.uint8)
        base[:, :, :2] = 200 if cls == 0 else 0
        base[:, :, 2:] = 0 if cls == 0 else 200
        return np.clip(base + rng.integers(0, 30, base.shape), 0, 255).astype(np.uint8)

    labeled = np.concatenate([images(3, 0), images(3, 1)])
    pool, test = np.concatenate([images(20, 0), images(20, 1)]), images(4, 0)
    ids = {
        "labeled": [f"l{i}" for i in range(6)],
        "pool": [f"p{i}" for i in range(40)],
        "test": [f"t{i}" for i in range(4)],
    }
    arrays = {"labeled": labeled, "pool": pool, "test": test}

    class Noise(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.randn(len(x), 8, generator=torch.Generator().manual_seed(len(x)))

    labels = np.array([0, 0, 0, 1, 1, 1])
    choice = choose_embedding(
        {"noise": Noise()}, arrays, ids, labels, EmbeddingStore(str(tmp_path))
    )
    assert choice.name == "pca" and choice.scores["pca"] == 1.0
    assert choice.pool.shape[0] == 40 and np.allclose(np.linalg.norm(choice.pool, axis=1), 1)
    one_each = choose_embedding(
        {"noise": Noise()},
        {**arrays, "labeled": labeled[[0, 3]]},
        {**ids, "labeled": ["l0", "l3"]},
        np.array([0, 1]),
        EmbeddingStore(str(tmp_path / "b")),
    )
    assert one_each.name == "noise"  # blind judge: the learned candidate is used
