"""Pseudo-label selection on sklearn digits: combined score vs softmax-only, over cycles.

Stand-ins: embeddings = L2-normalised PCA(32) of the pixels (fitted on the unlabeled pool),
classifier = logistic regression. Each seed: 30 % stratified test split (held out, only for
the final classifier accuracy), the rest is the pool, 5 labels per class. Each cycle:
train on human labels + last cycle's accepted pseudo-labels (weighted by score), select with
calibrated thresholds (target 0.99), and a human (the oracle) labels the top ``--review``
samples of the review queue. Prints a markdown table and writes docs/precision_coverage.png.

    OMP_NUM_THREADS=1 .venv/bin/python bench/digits_selection.py
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from harness.cli import parser
from harness.digits import digits_scaled, draw_labels, pool_test_split
from harness.results import pyplot, save_figure, table_header, table_row
from harness.stats import precision_coverage
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from flywheel.select.calibrated import SelectionConfig, select_pseudo_labels
from flywheel.select.result import Decision

VARIANTS = {
    "combined (LR x kNN)": SelectionConfig(),
    "combined + propagation": SelectionConfig(propagation=True),
    "softmax only": SelectionConfig(classifier_weight=1.0),
}


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=3000).fit(x, y, sample_weight=w)


def _probs(model: LogisticRegression, x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), 10))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def run_seed(seed: int, config: SelectionConfig, cycles: int, review: int) -> list[dict]:
    x, y = digits_scaled()
    pool, test = pool_test_split(y, seed)
    x_pool, x_test, y_pool, y_test = x[pool], x[test], y[pool], y[test]
    human = draw_labels(y_pool, 5, seed)
    emb = PCA(32, random_state=seed).fit(x_pool).transform(x_pool).astype(np.float32)
    pseudo_idx, pseudo_lab, pseudo_w = np.array([], int), np.array([], int), np.array([])
    rows = []
    for cycle in range(1, cycles + 1):
        unl = np.setdiff1d(np.arange(len(y_pool)), human)
        keep = ~np.isin(pseudo_idx, human)  # a human label supersedes a pseudo-label
        p_idx, p_lab, p_w = pseudo_idx[keep], pseudo_lab[keep], pseudo_w[keep]
        # Give every class's pseudo-labels the same total weight: easy classes are accepted
        # first, and unbalanced pseudo-labels shift the classifier's prior towards them.
        counts = np.bincount(p_lab, minlength=10)
        if len(p_lab):
            p_w = p_w * (len(p_lab) / 10) / np.maximum(counts[p_lab], 1)
        train_x = np.concatenate([x_pool[human], x_pool[p_idx]])
        train_y = np.concatenate([y_pool[human], p_lab])
        train_w = np.concatenate([np.ones(len(human)), p_w])
        model = _fit(train_x, train_y, train_w)
        # Out-of-fold probabilities for the human labels (pseudo-labels stay in every fold).
        oof = np.zeros((len(human), 10))
        folds = StratifiedKFold(5, shuffle=True, random_state=seed)
        for tr, te in folds.split(human, y_pool[human]):
            m = _fit(
                np.concatenate([x_pool[human[tr]], x_pool[p_idx]]),
                np.concatenate([y_pool[human[tr]], p_lab]),
                np.concatenate([np.ones(len(tr)), p_w]),
            )
            oof[te] = _probs(m, x_pool[human[te]])
        r = select_pseudo_labels(
            emb[unl],
            _probs(model, x_pool[unl]),
            emb[human],
            y_pool[human],
            None,
            oof,
            None,
            10,
            config,
        )
        acc = r.decision == Decision.ACCEPTED
        correct = r.label == y_pool[unl]
        rows.append(
            {
                "cycle": cycle,
                "humans": len(human),
                "accepted": int(acc.sum()),
                "precision": correct[acc].mean() if acc.any() else np.nan,
                "coverage": acc.sum() / len(unl),
                "test_acc": (model.predict(x_test) == y_test).mean(),
                "curve_combined": precision_coverage(r.score, correct),
            }
        )
        probs = _probs(model, x_pool[unl])  # the same model's softmax alone, for comparison
        correct_softmax = probs.argmax(1) == y_pool[unl]
        rows[-1]["curve_softmax"] = precision_coverage(probs.max(1), correct_softmax)
        queue = np.flatnonzero(r.decision == Decision.NEEDS_REVIEW)
        queue = queue[np.argsort(-r.score[queue], kind="stable")][:review]
        human = np.concatenate([human, unl[queue]])
        pseudo_idx, pseudo_lab, pseudo_w = unl[acc], r.label[acc], r.score[acc].astype(float)
    return rows


def _mean_curve(curves: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Average precision-at-coverage over seeds on a common coverage grid."""
    return np.mean([np.interp(grid, cov, prec) for cov, prec in curves], axis=0)


def table(results: dict, cycles: int) -> str:
    """Per variant and cycle: mean (min over seeds) of the selection's figures."""
    columns = ["selection", "cycle", "human labels", "accepted", "precision", "coverage"]
    lines = [table_header([*columns, "test acc"], "lllllll")]
    for name, runs in results.items():
        for c in range(cycles):
            rs = [run[c] for run in runs]
            prec = np.array([r["precision"] for r in rs])
            cov = np.array([r["coverage"] for r in rs])
            lines.append(
                table_row(
                    [
                        name,
                        c + 1,
                        f"{np.mean([r['humans'] for r in rs]):.0f}",
                        f"{np.mean([r['accepted'] for r in rs]):.0f}",
                        f"{np.nanmean(prec):.3f} ({np.nanmin(prec):.3f})",
                        f"{cov.mean():.3f} ({cov.min():.3f})",
                        f"{np.mean([r['test_acc'] for r in rs]):.3f}",
                    ]
                )
            )
    return "\n".join(lines)


def plot(results: dict, cycles: int, path: Path) -> None:
    """Precision vs coverage at the first and the last cycle: mean curves, seed dots."""
    grid = np.linspace(0.01, 1, 100)
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.2), sharey=True)
    base = results["combined (LR x kNN)"]
    for ax, c in zip(axes, [0, cycles - 1], strict=True):
        for key, label, style in [
            ("curve_combined", "combined score", "-"),
            ("curve_softmax", "softmax only", "--"),
        ]:
            ax.plot(grid, _mean_curve([run[c][key] for run in base], grid), style, label=label)
        for name, runs in results.items():
            pts = np.array([(run[c]["coverage"], run[c]["precision"]) for run in runs])
            ax.scatter(
                pts[:, 0], np.nan_to_num(pts[:, 1], nan=1.0), s=14, label=f"calibrated: {name}"
            )
        ax.axhline(0.99, color="k", lw=0.8, ls=":")
        ax.axvline(0.8, color="k", lw=0.8, ls=":")
        ax.set(
            title=f"cycle {c + 1}",
            xlabel="coverage of the unlabeled pool",
            ylim=(0.85, 1.005),
            xlim=(0, 1),
        )
    axes[0].set_ylabel("precision of accepted pseudo-labels")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("digits: precision vs coverage (curves: mean over seeds; dots: per seed)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--review", type=int, default=20, help="human labels per cycle")
    ap.add_argument("--plot", type=Path, default=Path("docs/precision_coverage.png"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    results = {
        name: [run_seed(s, cfg, args.cycles, args.review) for s in range(args.seeds)]
        for name, cfg in VARIANTS.items()
    }
    print(f"digits, {args.seeds} seeds, 5 labels/class, {args.review} reviews/cycle; mean (min)")
    print(table(results, args.cycles))
    plot(results, args.cycles, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
