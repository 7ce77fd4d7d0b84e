"""Dawid-Skene consensus over noisy annotators, and the majority-vote baseline.

Pure numerics over plain values (``Vote``s, a gold dict, a class list); the database edge
is ``flywheel.feedback.consensus``. Model: every item has one true class k (prior ``rho_k``); an
annotator j who sees class k answers l with probability ``pi_j[k, l]`` (their confusion
matrix), independently of the other annotators. EM alternates posteriors over the true
class (E) and priors / confusion matrices (M); gold items are clamped to their known class,
so they pin down who is reliable. Three choices, each measured in bench/bench_consensus.py:

- Smoothing. An annotator's overall accuracy has a Beta(``prior_correct``,
  ``prior_wrong``) prior (mean 0.8 by default: no track record means trusted moderately,
  not blindly), and each confusion row is pulled towards that annotator's "one-coin" row
  (accuracy on the diagonal, the rest spread evenly) with ``strength`` pseudo-votes. Plain
  per-cell smoothing lets one observed confusion make that cell several times likelier,
  which with ~4 votes per row (typical users) cost more than it gained; with hundreds of
  votes per row the full matrix still emerges (a systematic labeler is inverted).
- Leave-one-out E-step: an item's own votes are taken out of the counts before they judge
  that item. Plain EM is self-confirming on sparse annotators (a lone vote would vouch for
  its own annotator and drift to certainty); leave-one-out gave better calibrated
  confidences and more precise accepted labels.
- Reject votes ("the item is not ``label``") are *censored* answers: the annotator's own
  answer is some class other than ``label``, so the likelihood is ``1 - pi_j[k, label]``
  and the M-step spreads the vote over the other classes in proportion to ``pi_j``. A
  reject is thus weighed by the annotator's reliability, on two classes it is a vote for
  the other class, and an item with only rejects still gets evidence. Dropping rejects
  instead biases every reliability upwards (the kept votes over-represent confirms), and
  when users are anchored by the prediction they see it accepts less precise labels; a
  fixed "spread vote" would ignore reliability altogether.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flywheel.config import ConsensusSettings
from flywheel.errors import InvalidInputError

_TOL = 1e-6  # EM stops once no posterior moves by more than this
_TINY = 1e-300  # floor under logarithms
# Symmetric Dirichlet pseudo-items per class on the class priors: negligible once hundreds of
# items have votes, but a handful of early items must not make one class look common (a
# Laplace +1 let 2 items of a class lift a lone vote for it from 0.86 to 0.95 confidence).
_CLASS_PSEUDO = 5.0


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
    # Estimated share of right answers: (expected right + prior_correct) /
    # (n_votes + prior_correct + prior_wrong), "right" weighted by the item posteriors.
    accuracy: float
    n_votes: int  # rejects included
    gold_accuracy: float | None  # share of votes on gold items that agree with gold
    n_gold: int  # votes on gold items


@dataclass
class ConsensusResult:
    classes: list[str]
    items: dict[str, ItemConsensus]  # every voted or gold item
    annotators: dict[str, AnnotatorReliability]  # sorted by annotator id
    class_priors: dict[str, float]
    iterations: int  # EM rounds run
    converged: bool  # False: stopped at settings.max_iterations


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
    leave_one_out: bool = True,
    strength: float = 10.0,
) -> ConsensusResult:
    """Posterior class of every item (voted or gold) and every annotator's reliability.

    ``leave_one_out`` and ``strength`` (pseudo-votes pulling each confusion row towards the
    annotator's one-coin row) are the measured defaults; other values are for ablations.
    Deterministic: the same inputs give the same result. A reject of a label that is not a
    class is consistent with every class, and with a single class a reject cannot be
    modelled: both are left out of the model (still counted in ``n_votes``). A voted or
    gold label outside ``classes`` raises ``InvalidInputError``. Several votes of one
    annotator on one item count as independent votes (the database edge keeps one per pair).
    Each EM round costs O(votes * k + annotators * k^2) time and memory.
    """
    settings = settings or ConsensusSettings()
    if strength <= 0:
        raise InvalidInputError(f"strength must be > 0, got {strength}")
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

    a, b = settings.prior_correct, settings.prior_wrong
    g_rows = np.array([iidx[it] for it in gold], dtype=np.int64)
    g_cols = np.array([cidx[lab] for lab in gold.values()], dtype=np.int64)

    def one_coin(acc: np.ndarray) -> np.ndarray:
        """(n, k, k) rows: ``acc`` on the diagonal, ``1 - acc`` spread over the others."""
        q = np.repeat((1 - acc) / max(k - 1, 1), k * k).reshape(len(acc), k, k)
        q[:, np.arange(k), np.arange(k)] = acc[:, None] if k > 1 else 1.0
        return q

    def e_step(counts: np.ndarray, t_used: np.ndarray, own_diag: np.ndarray) -> np.ndarray:
        """Posteriors from the confusion counts that the M-step made from ``t_used``;
        each item's own contribution (``t_used[i]``, ``own_diag``) is left out."""
        own = t_used if leave_one_out else np.zeros_like(t_used)
        log_t = np.log(np.maximum(t_used.sum(0) - own + _CLASS_PSEUDO, _TINY))  # class prior
        rows = counts.sum(axis=2) + strength  # (annotator, true class)
        right, n_ann_votes = np.einsum("jkk->j", counts), counts.sum(axis=(1, 2))
        for mask in (pos, rej):
            i, j, lab = vi[mask], vj[mask], vl[mask]
            # The annotator's accuracy without this vote (whose mass is 1 once counted).
            right_v = right[j] - (own_diag[mask] if leave_one_out else 0.0)
            acc = (right_v + a) / (n_ann_votes[j] - own[i].sum(axis=1) + a + b)
            col = np.repeat(((1 - acc) / max(k - 1, 1))[:, None], k, axis=1)  # one-coin q[:, lab]
            col[np.arange(len(i)), lab] = acc if k > 1 else 1.0
            said = counts[j, :, lab] + strength * col
            den = rows[j] - own[i]
            # A vote's likelihood is pi[k, lab]; a reject's is 1 - pi[k, lab].
            num = said - own[i] if mask is pos else den - said
            np.add.at(log_t, i, np.log(np.maximum(num, _TINY)) - np.log(den))
        if n_items:
            log_t -= log_t.max(axis=1, keepdims=True)
        t = np.exp(log_t)
        t /= t.sum(axis=1, keepdims=True)
        t[g_rows] = 0.0
        t[g_rows, g_cols] = 1.0
        return t

    def m_step(t: np.ndarray, pi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected confusion counts (annotator, true class, answer) under posteriors t, and
        each vote's share of its annotator's diagonal (for leave-one-out)."""
        counts = np.zeros(n_ann * k * k)
        own_diag = np.zeros(len(vi))
        # A vote for l adds T[i, k] to cell (j, k, l) for every k.
        idx = (vj[pos] * k * k + vl[pos])[:, None] + np.arange(k)[None, :] * k
        counts += np.bincount(idx.ravel(), t[vi[pos]].ravel(), minlength=counts.size)
        own_diag[pos] = t[vi[pos], vl[pos]]
        if rej.any():
            # Censored: a reject of p spreads T[i, k] over the answers l != p in proportion
            # to pi[j, k, l], i.e. adds T[i, k] pi[j, k, l] / (1 - pi[j, k, p]). Summed per
            # (annotator, p) first, so memory stays O(annotators * k^2), not O(rejects * k^2).
            i, j, p = vi[rej], vj[rej], vl[rej]
            w = t[i] / (1.0 - pi[j, :, p])  # (rejects, k)
            idx = (j * k * k + p)[:, None] + np.arange(k)[None, :] * k  # cell (j, k, p)
            per_p = np.bincount(idx.ravel(), w.ravel(), minlength=n_ann * k * k)
            per_p = per_p.reshape(n_ann, k, k)
            counts += (pi * (per_p.sum(axis=2, keepdims=True) - per_p)).ravel()
            diag = np.einsum("jkk->jk", pi)[j] * w  # this vote's share of each diagonal cell
            own_diag[rej] = diag.sum(axis=1) - diag[np.arange(len(p)), p]
        return counts.reshape(n_ann, k, k), own_diag

    def accuracy(counts: np.ndarray) -> np.ndarray:  # Beta(a, b) posterior mean
        return (np.einsum("jkk->j", counts) + a) / (counts.sum(axis=(1, 2)) + a + b)

    def confusion(counts: np.ndarray) -> np.ndarray:
        cm = counts + strength * one_coin(accuracy(counts))
        return cm / cm.sum(axis=2, keepdims=True)

    # Start from what the gold items alone say about the annotators (with no gold: everyone
    # at the prior, i.e. a weighted majority vote). Starting from the plain majority instead
    # lets a colluding majority pull EM into the optimum where they are right.
    counts, t_used = np.zeros((n_ann, k, k)), np.zeros((n_items, k))
    t_used[g_rows, g_cols] = 1.0
    counts, own_diag = m_step(t_used, confusion(counts))
    t = e_step(counts, t_used, own_diag)
    iterations, converged = 0, False
    while iterations < settings.max_iterations and not converged:
        (counts, own_diag), t_used = m_step(t, confusion(counts)), t
        new_t = e_step(counts, t_used, own_diag)
        converged = bool(n_items == 0 or np.abs(new_t - t).max() < _TOL)
        t, iterations = new_t, iterations + 1
    rho = (t_used.sum(0) + _CLASS_PSEUDO) / (n_items + k * _CLASS_PSEUDO)

    n_votes = np.bincount(
        np.array([aidx[v.annotator] for v in votes], dtype=np.int64), minlength=n_ann
    )
    n_per_item = np.bincount(
        np.array([iidx[v.item] for v in votes], dtype=np.int64), minlength=n_items
    )
    acc = accuracy(counts)
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
                accuracy=float(acc[j]),
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
