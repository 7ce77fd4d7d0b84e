"""Embeddings for selection, and the evidence for which one a cycle uses.

Candidates: the self-supervised model's features and a simple PCA-of-pixels baseline
(label-free both, so the human labels are honest held-out data for them). Each is scored by
leave-one-out kNN accuracy on the human-labeled samples; the best one is used for the cycle,
so a learned embedding that is worse than the simple one is not used (DESIGN.md, "choices
by evidence").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from flywheel.datasets.fingerprint import Fingerprint
from flywheel.learn.embedders import PCA_NAME, fit_pixel_pca
from flywheel.learn.embedding_store import EmbeddingStore
from flywheel.learn.index import build_index, search
from flywheel.learn.pool_images import ImageSource
from flywheel.learn.ssl.embed import embed

# Bump when how embeddings are computed changes: cached vectors are then recomputed.
EMBEDDING_VERSION = 1


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


def model_fingerprint(module: nn.Module, extra: str = "") -> str:
    """The key of ``module``'s embeddings: its weights, ``extra`` and ``EMBEDDING_VERSION``."""
    key = Fingerprint("embedding", EMBEDDING_VERSION).add(extra)
    for name, tensor in sorted(module.state_dict().items()):
        key.add(name, tensor.detach().cpu().numpy())
    return key.hexdigest(24)


@dataclass(frozen=True)
class Embedder:
    """A candidate embedding: its module and the key its vectors are stored under."""

    name: str
    module: nn.Module
    fingerprint: str


def embedders(
    candidates: dict[str, nn.Module], pool: ImageSource, labeled: ImageSource, pca_dim: int = 32
) -> list[Embedder]:
    """``candidates`` (name -> module) and the pixel-PCA baseline fitted on the pool."""
    modules = {**candidates, PCA_NAME: fit_pixel_pca(pool, labeled, pca_dim)}
    return [Embedder(n, m, model_fingerprint(m, n)) for n, m in modules.items()]


def embed_ids(
    store: EmbeddingStore, embedder: Embedder, ids: list[str], images: ImageSource
) -> np.ndarray:
    """Unit vectors of ``images`` (whose ids are ``ids``), taken from the store where it
    has them; what it lacks is embedded now and stored."""
    where = {sid: j for j, sid in enumerate(ids)}

    def compute(wanted: list[str]) -> np.ndarray:
        # a fancy index: a lazy pool reads just these rows, batch by batch
        return embed(embedder.module, images[np.array([where[s] for s in wanted])])

    if not ids:
        return np.zeros((0, 0), dtype=np.float32)
    return store.ensure(embedder.fingerprint, ids, compute)


def judge_embedders(
    labeled: dict[str, np.ndarray], labels: np.ndarray, k: int = 5
) -> tuple[str, dict[str, float]]:
    """The candidate to use (by name) and every candidate's leave-one-out kNN accuracy on
    the labeled samples; ``labeled`` maps a name to its (m, d) vectors, learned ones first."""
    scores = {name: loo_knn_accuracy(vectors, labels, k) for name, vectors in labeled.items()}
    if np.bincount(labels).min() < 2:
        # One label in a class: leave-one-out has no same-class neighbour to find, every
        # candidate scores ~0 and the judge is blind. The learned embedding is then used
        # (it won on every seed where it could be judged: bench/LEARNING_NOTES.md).
        return next(iter(labeled)), scores
    # ties go to the simpler candidate (dict order: learned first, so reverse)
    return max(reversed(list(scores)), key=lambda n: scores[n]), scores


def choose_embedding(
    candidates: dict[str, nn.Module],
    images: dict[str, ImageSource],
    ids: dict[str, list[str]],
    labeled_labels: np.ndarray,
    store: EmbeddingStore,
    pca_dim: int = 32,
    k: int = 5,
) -> EmbeddingChoice:
    """Embed the labeled samples with every candidate, keep the best, and embed ``pool``
    and ``test`` with it: all here, in this process (a cycle on workers fans the pool out
    over shard tasks instead, :mod:`flywheel.cycle.steps.select_shards`).

    ``images``/``ids`` have keys "labeled", "pool", "test"; ``candidates`` maps a name to a
    backbone taking float (N, C, H, W) in [0, 1]; vectors are kept in ``store``.
    """
    options = embedders(candidates, images["pool"], images["labeled"], pca_dim)
    labeled = {e.name: embed_ids(store, e, ids["labeled"], images["labeled"]) for e in options}
    best_name, scores = judge_embedders(labeled, labeled_labels, k)
    best = next(e for e in options if e.name == best_name)
    pool, test = (embed_ids(store, best, ids[p], images[p]) for p in ("pool", "test"))
    return EmbeddingChoice(best.name, best.fingerprint, labeled[best.name], pool, test, scores)
