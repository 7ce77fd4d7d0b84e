"""Embeddings for selection, and the evidence for which one a cycle uses.

Candidates: the self-supervised model's features and a simple PCA-of-pixels baseline
(label-free both, so the human labels are honest held-out data for them). Each is scored by
leave-one-out kNN accuracy on the human-labeled samples; the best one is used for the cycle,
so a learned embedding that is worse than the simple one is not used (DESIGN.md, "choices
by evidence").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from torch import nn

from flywheel.datasets.fingerprint import Fingerprint, fingerprint
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.index import build_index, normalize, search
from flywheel.learn.pool_images import ImageSource
from flywheel.learn.ssl.embed import embed

# Bump when how embeddings are computed changes: cached vectors are then recomputed.
EMBEDDING_VERSION = 1
PCA_FIT_ROWS = 20_000  # pool images the pixel-PCA baseline is fitted on, at most
PCA_BATCH = 4096  # images projected at a time


@dataclass(frozen=True)
class EmbeddingChoice:
    name: str  # "ssl" or "pca"
    fingerprint: str
    labeled: np.ndarray  # float32 (m, d), unit rows
    pool: np.ndarray  # float32 (n, d), unit rows
    test: np.ndarray  # float32 (t, d), unit rows
    scores: dict[str, float]  # candidate name -> leave-one-out kNN accuracy on labeled


def loo_knn_accuracy(embeddings: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out accuracy of a similarity-weighted k-NN vote (float32 (m, d), int (m,))."""
    if len(labels) < 2:
        return 0.0
    index = build_index(embeddings)
    sims, ids = search(index, embeddings, min(k + 1, len(labels)))
    num_classes = int(labels.max()) + 1
    correct = 0
    for i in range(len(labels)):
        keep = ids[i] != i
        votes = np.zeros(num_classes)
        np.add.at(votes, labels[ids[i][keep]], np.maximum(sims[i][keep], 0) + 1e-6)
        correct += int(votes.argmax() == labels[i])
    return correct / len(labels)


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _pca_transform(pca: PCA, images: ImageSource) -> np.ndarray:
    """Unit rows of ``images`` projected by ``pca``, a batch at a time."""
    out = [
        pca.transform(_flat(images[i : i + PCA_BATCH])).astype(np.float32)
        for i in range(0, len(images), PCA_BATCH)
    ]
    if not out:
        return np.zeros((0, pca.n_components_), dtype=np.float32)
    return normalize(np.concatenate(out))


def model_fingerprint(module: nn.Module, extra: str = "") -> str:
    """The key of ``module``'s embeddings: its weights, ``extra`` and ``EMBEDDING_VERSION``."""
    key = Fingerprint("embedding", EMBEDDING_VERSION).add(extra)
    for name, tensor in sorted(module.state_dict().items()):
        key.add(name, tensor.detach().cpu().numpy())
    return key.hexdigest(24)


def choose_embedding(
    candidates: dict[str, nn.Module],
    images: dict[str, ImageSource],
    ids: dict[str, list[str]],
    labeled_labels: np.ndarray,
    store: EmbeddingStore,
    pca_dim: int = 32,
    k: int = 5,
) -> EmbeddingChoice:
    """Embed ``labeled``, ``pool`` and ``test`` with every candidate and keep the best.

        ``images``/``ids`` have keys "labeled", "pool", "test"; ``candidates`` maps a name to a
        backbone taking float (N, C, H, W) in [0, 1]; its vectors are kept in ``store`` and only
    what the store lacks is embedded. PCA is fitted on the pool (unlabeled).
    """
    parts = ("labeled", "pool", "test")

    def embedder(module: nn.Module, part: str) -> Callable[[list[str]], np.ndarray]:
        where = {sid: j for j, sid in enumerate(ids[part])}

        def compute(wanted: list[str]) -> np.ndarray:
            # a fancy index: a lazy pool reads just these rows, batch by batch
            return embed(module, images[part][np.array([where[s] for s in wanted])])

        return compute

    results: dict[str, dict[str, np.ndarray]] = {}
    fingerprints: dict[str, str] = {}
    for name, module in candidates.items():
        fp = model_fingerprint(module, name)
        fingerprints[name] = fp
        results[name] = {p: store.ensure(fp, ids[p], embedder(module, p)) for p in parts}
    fit_on = images["pool"] if len(images["pool"]) >= pca_dim else images["labeled"]
    if len(fit_on) > PCA_FIT_ROWS:  # a fixed sample: the fit costs the same at any pool size
        rows = np.random.default_rng(0).choice(len(fit_on), PCA_FIT_ROWS, replace=False)
        fit_on = fit_on[np.sort(rows)]
    fit_rows = _flat(fit_on[0 : len(fit_on)])
    pca = PCA(n_components=min(pca_dim, *fit_rows.shape), random_state=0).fit(fit_rows)
    results["pca"] = {p: _pca_transform(pca, images[p]) for p in parts}
    fingerprints["pca"] = fingerprint("pca-embedding", EMBEDDING_VERSION, str(pca_dim), length=24)

    scores = {
        name: loo_knn_accuracy(r["labeled"], labeled_labels, k) for name, r in results.items()
    }
    if np.bincount(labeled_labels).min() < 2:
        # One label in a class: leave-one-out has no same-class neighbour to find, every
        # candidate scores ~0 and the judge is blind. The learned embedding is then used
        # (it won on every seed where it could be judged: bench/LEARNING_NOTES.md).
        best = next(iter(results))
    else:  # ties go to the simpler candidate (dict order: learned first, so reverse)
        best = max(reversed(list(scores)), key=lambda n: scores[n])
    chosen = results[best]
    return EmbeddingChoice(
        best, fingerprints[best], chosen["labeled"], chosen["pool"], chosen["test"], scores
    )
