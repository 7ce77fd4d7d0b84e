"""Dawid-Skene consensus over noisy annotators, and the majority-vote baseline.

Pure numerics over plain values (``Vote``s, a gold dict, a class list); the database edge
is ``flywheel.consensus``. Model: every item has one true class k (prior ``rho_k``); an
annotator j who sees class k answers l with probability ``pi_j[k, l]`` (their confusion
matrix), independently of the other annotators. EM alternates posteriors over the true
class (E) and priors / confusion matrices (M). Gold items are clamped to their known class,
so they pin down who is reliable. Each confusion row has a Dirichlet prior whose diagonal /
off-diagonal mass is ``prior_correct`` / ``prior_wrong`` (a Beta(4, 1) on accuracy by
default): an annotator with no track record is trusted moderately (0.8), not blindly.

Reject votes ("the item is not ``label``") are *censored* observations: the annotator's
own answer is some class other than ``label``, so their likelihood is ``1 - pi_j[k, label]``
and the M-step spreads their count over the other classes in proportion to ``pi_j``. Why:
this weighs a reject by the annotator's measured reliability (a careful annotator's reject
nearly rules the class out, a sloppy one's barely moves it), and on a two-class problem a
reject becomes exactly a vote for the other class. Dropping rejects throws that evidence
away (bench/bench_consensus.py measures both), and a fixed "spread vote" over the other
classes ignores reliability and distorts the annotator's confusion matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.config import ConsensusSettings
from flywheel.errors import InvalidInputError

_TOL = 1e-6  # EM stops once no posterior moves by more than this


@dataclass(frozen=True)
class Vote:
    item: str
    annotator: str
    label: str
    reject: bool = False  # True: "the item is NOT ``label``"


@dataclass
class ItemConsensus:
    item: str
    label: str  # the most probable class
    confidence: float  # its posterior probability
    distribution: dict[str, float]  # class -> posterior, sums to 1
    n_votes: int
    gold: bool  # clamped to a known label


@dataclass
class AnnotatorReliability:
    annotator: str
    accuracy: float  # estimated P(answer == truth): sum_k rho_k pi[k, k]
    n_votes: int  # rejects included
    gold_accuracy: float | None  # share of votes on gold items that agree with gold
    n_gold: int  # votes on gold items


@dataclass
class ConsensusResult:
    classes: list[str]
    items: dict[str, ItemConsensus]
    annotators: dict[str, AnnotatorReliability]
    class_priors: dict[str, float]
    iterations: int
    converged: bool


def _check(votes: Sequence[Vote], classes: Sequence[str], gold: Mapping[str, str]) -> None:
    if not classes or len(set(classes)) != len(classes):
        raise InvalidInputError("classes must be a non-empty list without duplicates")
    known = set(classes)
    for item, label in gold.items():
        if label not in known:
            raise InvalidInputError(f"gold label {label!r} of {item!r} is not a known class")
    for v in votes:
        if not v.reject and v.label not in known:
            raise InvalidInputError(f"vote label {v.label!r} on {v.item!r} is not a known class")


def gold_agreement(votes: Sequence[Vote], gold: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """annotator -> (votes agreeing with gold, votes on gold items); a reject agrees when it
    rejects a label other than the gold one."""
    out: dict[str, tuple[int, int]] = {}
    for v in votes:
        if v.item in gold:
            right, n = out.get(v.annotator, (0, 0))
            out[v.annotator] = (right + ((gold[v.item] != v.label) == v.reject), n + 1)
    return out


def dawid_skene(
    votes: Sequence[Vote],
    classes: Sequence[str],
    gold: Mapping[str, str] | None = None,
    settings: ConsensusSettings | None = None,
) -> ConsensusResult:
    """Posterior class of every item (voted or gold) and every annotator's reliability.

    Deterministic: the same inputs give the same result. A reject of a label that is not a
    class is consistent with every class, and with a single class a reject cannot be
    modelled: both are left out of the model (still counted in ``n_votes``). A voted label or gold label outside ``classes``
    raises ``InvalidInputError``. Several votes of one annotator on one item count as
    independent votes (the database edge keeps one per pair).
    """
    settings = settings or ConsensusSettings()
    gold = dict(gold or {})
    classes = list(classes)
    _check(votes, classes, gold)
    k = len(classes)
    cidx = {c: i for i, c in enumerate(classes)}
    items = sorted({v.item for v in votes} | gold.keys())
    annotators = sorted({v.annotator for v in votes})
    iidx = {it: i for i, it in enumerate(items)}
    aidx = {a: j for j, a in enumerate(annotators)}
    used = [v for v in votes if v.label in cidx and not (v.reject and k == 1)]
    vi = np.array([iidx[v.item] for v in used], dtype=np.int64)
    vj = np.array([aidx[v.annotator] for v in used], dtype=np.int64)
    vl = np.array([cidx[v.label] for v in used], dtype=np.int64)
    rej = np.array([v.reject for v in used], dtype=bool)
    pos = ~rej
    n_items, n_ann = len(items), len(annotators)

    alpha = np.full((k, k), settings.prior_wrong / max(k - 1, 1))
    np.fill_diagonal(alpha, settings.prior_correct)
    pi = np.broadcast_to(alpha / alpha.sum(1, keepdims=True), (n_ann, k, k)).copy()
    rho = np.full(k, 1.0 / k)
    g_rows = np.array([iidx[it] for it in gold], dtype=np.int64)
    g_cols = np.array([cidx[lab] for lab in gold.values()], dtype=np.int64)

    def e_step() -> np.ndarray:
        log_t = np.tile(np.log(rho), (n_items, 1))
        np.add.at(log_t, vi[pos], np.log(pi[vj[pos], :, vl[pos]]))
        np.add.at(log_t, vi[rej], np.log(np.clip(1.0 - pi[vj[rej], :, vl[rej]], 1e-300, 1)))
        if n_items:
            log_t -= log_t.max(axis=1, keepdims=True)
        t = np.exp(log_t)
        t /= t.sum(axis=1, keepdims=True)
        t[g_rows] = 0.0
        t[g_rows, g_cols] = 1.0
        return t

    def m_step(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.zeros(n_ann * k * k)
        # A vote for l adds T[i, k] to cell (j, k, l) for every k.
        idx = (vj[pos] * k * k + vl[pos])[:, None] + np.arange(k)[None, :] * k
        counts += np.bincount(idx.ravel(), t[vi[pos]].ravel(), minlength=counts.size)
        if rej.any():  # censored: spread over l != p in proportion to the current pi
            share = pi[vj[rej]].copy()
            share[np.arange(rej.sum()), :, vl[rej]] = 0.0
            share /= share.sum(axis=2, keepdims=True)
            weight = t[vi[rej]][:, :, None] * share
            idx = (vj[rej] * k * k)[:, None] + np.arange(k * k)[None, :]
            counts += np.bincount(idx.ravel(), weight.ravel(), minlength=counts.size)
        cm = counts.reshape(n_ann, k, k) + alpha
        return cm / cm.sum(axis=2, keepdims=True), (t.sum(0) + 1.0) / (n_items + k)

    t = e_step()  # start: every annotator at the prior, flat class priors
    iterations, converged = 0, False
    while iterations < settings.max_iterations and not converged:
        pi, rho = m_step(t)
        new_t = e_step()
        converged = bool(n_items == 0 or np.abs(new_t - t).max() < _TOL)
        t, iterations = new_t, iterations + 1

    n_votes = np.bincount(
        np.array([aidx[v.annotator] for v in votes], dtype=np.int64), minlength=n_ann
    )
    n_per_item = np.bincount(
        np.array([iidx[v.item] for v in votes], dtype=np.int64), minlength=n_items
    )
    accuracy = np.einsum("k,jkk->j", rho, pi)
    on_gold = gold_agreement(votes, gold)
    return ConsensusResult(
        classes=classes,
        items={
            it: ItemConsensus(
                item=it,
                label=classes[int(t[i].argmax())],
                confidence=float(t[i].max()),
                distribution={c: float(p) for c, p in zip(classes, t[i], strict=True)},
                n_votes=int(n_per_item[i]),
                gold=it in gold,
            )
            for i, it in enumerate(items)
        },
        annotators={
            a: AnnotatorReliability(
                annotator=a,
                accuracy=float(accuracy[j]),
                n_votes=int(n_votes[j]),
                gold_accuracy=on_gold[a][0] / on_gold[a][1] if a in on_gold else None,
                n_gold=on_gold.get(a, (0, 0))[1],
            )
            for j, a in enumerate(annotators)
        },
        class_priors={c: float(p) for c, p in zip(classes, rho, strict=True)},
        iterations=iterations,
        converged=converged,
    )


def majority_vote(
    votes: Sequence[Vote], classes: Sequence[str], seed: int = 0
) -> dict[str, ItemConsensus]:
    """The baseline: each item's most frequent voted label, ties broken at random (seeded).

    Rejects are not votes for anything and are ignored; an item with only rejects gets a
    random class with confidence 1/K. ``confidence`` is the winning share of the votes.
    """
    classes = list(classes)
    _check(votes, classes, {})
    cidx = {c: i for i, c in enumerate(classes)}
    tally: dict[str, np.ndarray] = {}
    n_votes: dict[str, int] = {}
    for v in votes:
        row = tally.setdefault(v.item, np.zeros(len(classes)))
        n_votes[v.item] = n_votes.get(v.item, 0) + 1
        if not v.reject:
            row[cidx[v.label]] += 1
    rng = np.random.default_rng(seed)
    out = {}
    for item in sorted(tally):
        row = tally[item]
        dist = row / row.sum() if row.sum() else np.full(len(classes), 1.0 / len(classes))
        best = int(rng.choice(np.flatnonzero(dist == dist.max())))
        out[item] = ItemConsensus(
            item=item,
            label=classes[best],
            confidence=float(dist[best]),
            distribution={c: float(p) for c, p in zip(classes, dist, strict=True)},
            n_votes=n_votes[item],
            gold=False,
        )
    return out
