"""Label audit: our confident learning against cleanlab's, on digits with flipped labels.

The 1,797 sklearn digits get 5 % or 10 % of their labels flipped to a random other class
(seeds 0-4). Out-of-sample probabilities come from ``flywheel.insights.label_audit.
out_of_sample_probs`` (5-fold logistic regression) on two feature sets: the 64 pixels, and
the flywheel's ``pca`` embedding (PCA-32 of the pixels, unit rows). Both detectors get the
same probabilities:

- ``flywheel``: ``flywheel.insights.label_audit.find_label_issues``;
- ``cleanlab``: ``cleanlab.filter.find_label_issues`` (default ``prune_by_noise_rate``),
  with ``n_jobs=1`` and with its default (all cores, multiprocessing);
- two simple baselines: argmax != given, and the lowest self-confidence ranks cut at the
  true number of flips (an oracle count no real audit has).

Precision/recall/F1 are against the flipped set. A second part times both detectors on
synthetic probabilities (10 classes, up to 200,000 samples).

cleanlab is not a dependency of the flywheel: install it to run this (dev extra).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_label_audit.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from harness.cli import RESULTS, add_out, add_seeds, parser
from harness.digits import NUM_CLASSES as K
from harness.digits import digits_scaled
from harness.results import write_json
from harness.stats import best_of
from sklearn.decomposition import PCA

from flywheel.insights.label_audit import find_label_issues, out_of_sample_probs, self_confidence

try:
    from cleanlab.filter import find_label_issues as cleanlab_find
except ImportError:  # measured only when present
    cleanlab_find = None


def features() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = digits_scaled()
    pca = PCA(n_components=32, random_state=0).fit_transform(x)
    pca /= np.linalg.norm(pca, axis=1, keepdims=True)
    return {"pixels": (x, y), "pca32": (pca, y)}


def flip(y: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``rate`` of them moved to a uniformly random other class; the flip mask."""
    noisy = y.copy()
    idx = rng.choice(len(y), round(rate * len(y)), replace=False)
    noisy[idx] = (y[idx] + rng.integers(1, K, len(idx))) % K
    flipped = np.zeros(len(y), dtype=bool)
    flipped[idx] = True
    return noisy, flipped


def scores(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((found & truth).sum())
    p = tp / max(int(found.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / max(p + r, 1e-12),
        "found": int(found.sum()),
    }


def detectors(probs: np.ndarray, noisy: np.ndarray, n_flipped: int) -> dict[str, tuple]:
    out: dict[str, tuple] = {"flywheel": best_of(lambda: find_label_issues(probs, noisy))}
    if cleanlab_find is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["cleanlab (n_jobs=1)"] = best_of(lambda: cleanlab_find(noisy, probs, n_jobs=1))
            out["cleanlab (all cores)"] = best_of(lambda: cleanlab_find(noisy, probs), repeat=2)
    out["argmax != given"] = best_of(lambda: probs.argmax(axis=1) != noisy)

    def lowest() -> np.ndarray:
        mask = np.zeros(len(noisy), dtype=bool)
        mask[np.argsort(self_confidence(probs, noisy))[:n_flipped]] = True
        return mask

    out["lowest self-confidence, true count (oracle)"] = best_of(lowest)
    return out


def quality(seeds: list[int]) -> list[dict]:
    rows = []
    for feat_name, (x, y) in features().items():
        for rate in (0.05, 0.10):
            per: dict[str, list[dict]] = {}
            same_masks = []
            cv_times = []
            for seed in seeds:
                noisy, flipped = flip(y, rate, np.random.default_rng(seed))
                t = time.perf_counter()
                probs = out_of_sample_probs(x, noisy, K, folds=5, seed=seed)
                cv_times.append(time.perf_counter() - t)
                found = detectors(probs, noisy, int(flipped.sum()))
                if "cleanlab (n_jobs=1)" in found:
                    same_masks.append(
                        bool((found["flywheel"][0] == found["cleanlab (n_jobs=1)"][0]).all())
                    )
                for name, (mask, secs) in found.items():
                    per.setdefault(name, []).append({**scores(mask, flipped), "seconds": secs})
            for name, runs in per.items():
                row = {"features": feat_name, "flip_rate": rate, "method": name}
                for key in ("precision", "recall", "f1", "found", "seconds"):
                    vals = np.array([r[key] for r in runs], dtype=float)
                    row[key] = float(vals.mean())
                    row[f"{key}_sd"] = float(vals.std())
                row["identical_masks"] = f"{sum(same_masks)}/{len(same_masks)}"
                row["cv_probs_seconds"] = float(np.mean(cv_times))
                rows.append(row)
                print(
                    f"{feat_name:6s} {rate:4.0%} {name:44s} P {row['precision']:.3f} "
                    f"R {row['recall']:.3f} F1 {row['f1']:.3f} ({row['found']:.0f} found) "
                    f"{1000 * row['seconds']:.1f} ms",
                    flush=True,
                )
    return rows


def scale(sizes: list[int]) -> list[dict]:
    """Runtime alone, on synthetic out-of-sample-like probabilities with 10 % noise."""
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        y = rng.integers(0, K, n)
        logits = rng.normal(0, 1.5, (n, K))
        logits[np.arange(n), y] += 3.0
        noisy, _ = flip(y, 0.10, rng)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        found = detectors(probs, noisy, 0)
        row = {"n": n}
        for name in ("flywheel", "cleanlab (n_jobs=1)", "cleanlab (all cores)"):
            if name in found:
                row[name] = found[name][1]
        if "cleanlab (n_jobs=1)" in found:
            row["identical"] = bool((found["flywheel"][0] == found["cleanlab (n_jobs=1)"][0]).all())
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    ap = parser(__doc__)
    add_seeds(ap, [0, 1, 2, 3, 4])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 200_000])
    add_out(ap, RESULTS / "label_audit.json")
    args = ap.parse_args()
    if cleanlab_find is None:
        print("cleanlab is not installed: only the flywheel's detector is measured")
    result = {
        "cleanlab": __import__("cleanlab").__version__ if cleanlab_find is not None else None,
        "seeds": args.seeds,
        "quality": quality(args.seeds),
        "scale": scale(args.sizes),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
