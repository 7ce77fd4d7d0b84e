"""Annotator consensus on the real sklearn digits labels: Dawid-Skene vs majority vote.

The 1,797 true labels of ``sklearn.datasets.load_digits`` (10 classes) are annotated by
simulated users. Every item has one model prediction (right 85 % of the time) and is seen
by 3 distinct random annotators; each forms a belief from their own noise model and sends
feedback as the product does: ``confirm`` when the belief equals the prediction, else
``correct`` (their belief) or ``reject`` (of the prediction) with equal odds. 5 % of the
items are gold (clamped, left out of every accuracy figure).

Scenarios:

- ``panel``: 5 good annotators (95 %), 3 sloppy (60 %, uniform errors), 1 adversary (5 %
  right; 75 % of the time a fixed wrong class per true class, else a random wrong class).
- ``crowd``: 150 users, accuracy ~ Beta(8, 2) (mean 80 %), 5 % of them adversaries as
  above; each user has ~36 votes (~4 per confusion-matrix row).
- ``crowd, anchored``: as ``crowd``, but a user who disagrees with the shown prediction
  confirms it anyway 30 % of the time: answers then depend on the prediction, as real
  users' do, which breaks Dawid-Skene's conditional independence.

Methods: majority vote (the baseline: rejects ignored, random tie-break); Dawid-Skene as
shipped (rejects censored, leave-one-out E-step, confusion rows shrunk to one-coin); and
ablations: rejects dropped, no leave-one-out, and the model's prediction added as one more
annotator. "accepted" is what ``resolve_feedback`` would label at min_confidence 0.9
(majority vote: 3 of 3 unanimous). Accuracy figures are over all voted non-gold items (an
item a method gives no answer for counts as wrong). "annot. MAE": mean |estimated - true|
accuracy per annotator (true: the share of their answers that were right). ECE: 10 bins.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_consensus.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness.cli import DOCS, RESULTS, add_out, add_seeds, parser
from harness.digits import NUM_CLASSES as K
from harness.digits import digits_uint8
from harness.results import markdown_table, pyplot, save_figure, write_json

from flywheel.config import ConsensusSettings
from flywheel.feedback.consensus import ItemConsensus, Vote, dawid_skene, majority_vote

CLASSES = [str(c) for c in range(K)]
SETTINGS = ConsensusSettings()


def _annotators(scenario: str, rng: np.random.Generator) -> tuple[list[str], np.ndarray, list]:
    """Names, nominal accuracies and a belief function per annotator."""
    if scenario == "panel":
        kinds = ["good"] * 5 + ["sloppy"] * 3 + ["adversary"]
        acc = np.array([0.95] * 5 + [0.60] * 3 + [0.05])
    else:
        n = 150
        kinds = ["adversary" if rng.random() < 0.05 else "crowd" for _ in range(n)]
        acc = np.where(np.array(kinds) == "adversary", 0.05, rng.beta(8, 2, n))
    names = [f"{kind}{i}" for i, kind in enumerate(kinds)]
    beliefs = []
    for kind, a in zip(kinds, acc, strict=True):
        if kind == "adversary":  # a fixed wrong class per true class: a random derangement
            fixed = rng.permutation(K)
            while (fixed == np.arange(K)).any():
                fixed = rng.permutation(K)
            beliefs.append(("fixed", a, fixed))
        else:
            beliefs.append(("uniform", a, None))
    return names, acc, beliefs


def _believe(rng: np.random.Generator, truth: int, spec: tuple) -> int:
    how, acc, fixed = spec
    if rng.random() < acc:
        return truth
    wrong = int((truth + rng.integers(1, K)) % K)  # uniform over the other classes
    if how == "fixed" and rng.random() < 0.75 / (1 - acc):
        return int(fixed[truth])
    return wrong


def simulate(scenario: str, seed: int, anchor: float = 0.0) -> dict:
    """Votes of one run. ``anchor``: chance that an annotator who disagrees with the shown
    prediction confirms it anyway (the answer then depends on the prediction, which
    Dawid-Skene's conditional independence does not allow for)."""
    rng = np.random.default_rng(seed)
    truth = digits_uint8()[1].astype(int)
    names, _, specs = _annotators(scenario.split(",")[0], rng)
    n = len(truth)
    predicted = np.where(rng.random(n) < 0.85, truth, (truth + rng.integers(1, K, n)) % K)
    votes: list[Vote] = []
    right = np.zeros(len(names))
    seen = np.zeros(len(names))
    for i in range(n):
        for j in rng.choice(len(names), 3, replace=False):
            b = _believe(rng, int(truth[i]), specs[j])
            if b != predicted[i] and rng.random() < anchor:
                b = int(predicted[i])
            right[j] += b == truth[i]
            seen[j] += 1
            if b == predicted[i]:
                votes.append(Vote(str(i), names[j], CLASSES[b]))  # confirm
            elif rng.random() < 0.5:
                votes.append(Vote(str(i), names[j], CLASSES[b]))  # correct
            else:
                votes.append(Vote(str(i), names[j], CLASSES[predicted[i]], reject=True))
    gold_ids = rng.choice(n, int(0.05 * n), replace=False)
    gold = {str(i): CLASSES[truth[i]] for i in gold_ids}
    true_acc = {a: float(r / s) for a, r, s in zip(names, right, seen, strict=True) if s}
    true_acc["model"] = float((predicted == truth).mean())  # for the model-as-annotator run
    return {"truth": truth, "votes": votes, "gold": gold, "true_acc": true_acc, "pred": predicted}


def _ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    edges = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(conf[edges == b].mean() - correct[edges == b].mean()) * (edges == b).mean()
            for b in range(bins)
            if (edges == b).any()
        )
    )


def _score(items: dict[str, ItemConsensus], sim: dict, accept: Callable) -> dict:
    """Over every voted non-gold item; one a method has no answer for counts as wrong."""
    ids = sorted({v.item for v in sim["votes"]} - sim["gold"].keys())
    missing = ItemConsensus("", "", 0.0, {}, 0, False)
    got = [items.get(i, missing) for i in ids]
    conf = np.array([it.confidence for it in got])
    truth = [CLASSES[sim["truth"][int(i)]] for i in ids]
    correct = np.array([it.label == t for it, t in zip(got, truth, strict=True)])
    ok = np.array([it is not missing and accept(it) for it in got])
    return {
        "accuracy": float(correct.mean()),
        "accepted_share": float(ok.mean()),
        "accepted_accuracy": float(correct[ok].mean()) if ok.any() else None,
        "ece": _ece(conf, correct),
        "unanswered": len(ids) - sum(i in items for i in ids),
    }


SCENARIOS = {"panel": 0.0, "crowd": 0.0, "crowd, anchored": 0.3}  # name -> anchoring


def run(scenario: str, seed: int) -> dict:
    sim = simulate(scenario, seed, SCENARIOS[scenario])
    votes, gold = sim["votes"], sim["gold"]
    out: dict = {"votes": len(votes), "rejects": sum(v.reject for v in votes)}
    t0 = time.perf_counter()
    mv = majority_vote(votes, CLASSES, seed=seed)
    out["majority vote"] = _score(mv, sim, lambda it: it.confidence >= 1.0 and it.n_votes == 3)
    out["majority vote"]["seconds"] = time.perf_counter() - t0

    def ds(name: str, vs: list[Vote], **kw) -> None:
        t = time.perf_counter()
        res = dawid_skene(vs, CLASSES, gold, SETTINGS, **kw)
        row = _score(res.items, sim, lambda it: it.confidence >= SETTINGS.min_confidence)
        row["seconds"] = time.perf_counter() - t
        row["iterations"] = res.iterations
        est = {a: r.accuracy for a, r in res.annotators.items()}
        row["annotator_mae"] = float(
            np.mean([abs(est[a] - t_) for a, t_ in sim["true_acc"].items() if a in est])
        )
        if name == "dawid-skene":  # estimated, true accuracy per annotator (the plot)
            row["annotators"] = {a: [round(est[a], 4), round(sim["true_acc"][a], 4)] for a in est}
        out[name] = row

    ds("dawid-skene", votes)
    ds("DS, rejects dropped", [v for v in votes if not v.reject])
    ds("DS, no leave-one-out", votes, leave_one_out=False)
    model = [Vote(str(i), "model", CLASSES[p]) for i, p in enumerate(sim["pred"])]
    ds("DS + model as annotator", [*votes, *model])
    return out


METHODS = [
    "majority vote",
    "dawid-skene",
    "DS, rejects dropped",
    "DS, no leave-one-out",
    "DS + model as annotator",
]


def _fmt(values: list[float | None], pct: bool = True) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    m, s = float(np.mean(vals)), float(np.std(vals))
    return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def table(results: dict) -> str:
    rows = []
    for scenario, runs in results.items():
        for m in METHODS:
            rs = [r[m] for r in runs]
            rows.append(
                [
                    scenario,
                    m,
                    _fmt([r["accuracy"] for r in rs]),
                    _fmt([r["accepted_share"] for r in rs]),
                    _fmt([r["accepted_accuracy"] for r in rs]),
                    _fmt([r["ece"] for r in rs], pct=False),
                    _fmt([r.get("annotator_mae") for r in rs], pct=False),
                    f"{np.mean([r['seconds'] for r in rs]):.2f}",
                ]
            )
    columns = ["scenario", "method", "accuracy %", "accepted %", "accuracy of accepted %"]
    return markdown_table([*columns, "ECE", "annot. MAE", "seconds"], "llrrrrrr", rows)


def plot(results: dict, path: Path) -> None:
    """Estimated vs true accuracy per annotator, all seeds: panel and crowd side by side."""
    plt = pyplot()
    shown = [s for s in ("panel", "crowd") if s in results]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.0 * len(shown), 4.0), dpi=110)
    colors = {"good": "tab:green", "sloppy": "tab:orange", "crowd": "tab:blue"}
    colors["adversary"] = "tab:red"
    for ax, scenario in zip(np.atleast_1d(axes), shown, strict=True):
        runs = results[scenario]
        for kind, color in colors.items():
            pts = [
                v
                for r in runs
                for a, v in r["dawid-skene"]["annotators"].items()
                if a.rstrip("0123456789") == kind
            ]
            if pts:
                ax.scatter([p[1] for p in pts], [p[0] for p in pts], s=10, c=color, label=kind)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("true accuracy")
        ax.set_ylabel("Dawid-Skene estimate")
        ax.set_title(f"{scenario} ({len(runs)} seeds)")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = parser(__doc__)
    add_seeds(ap, [0, 1, 2, 3, 4])
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    add_out(ap, RESULTS / "consensus.json")
    ap.add_argument("--png", type=Path, default=DOCS / "annotator_reliability.png")
    args = ap.parse_args()
    results = {s: [run(s, seed) for seed in args.seeds] for s in args.scenarios}
    print(table(results))
    for s, runs in results.items():
        print(
            f"{s}: {np.mean([r['votes'] for r in runs]):.0f} votes/seed, "
            f"{100 * np.mean([r['rejects'] / r['votes'] for r in runs]):.1f} % rejects"
        )
    write_json(args.out, {"seeds": args.seeds, "results": results}, indent=1)
    plot(results, args.png)


if __name__ == "__main__":
    main()
