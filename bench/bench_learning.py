"""How good the wheel is: Flywheel vs. baselines on sklearn digits, same protocol, same run.

Protocol (per seed): 30 % stratified test split (``train_test_split(..., stratify=y,
random_state=seed)``), the rest is the pool, N labels per class drawn from the pool with the
same seed; the pool's other labels are hidden (used only to score pseudo-labels).
Compared in the same run:

- ``flywheel``: the real pipeline (ingest -> cycles -> champion) in a temp workspace;
- ``supervised``: Flywheel's own classifier trained on the N labels only (no pool);
- ``label_spreading``: sklearn ``LabelSpreading(kernel="knn")`` on pixels;
- ``self_training``: sklearn ``SelfTrainingClassifier(SVC(probability=True))`` on pixels.

    OMP_NUM_THREADS=2 .venv/bin/python bench/bench_learning.py --labels-per-class 1 5 10 \
        --seeds 0 1 2 3 4 --cycles 5 --out bench/results/learning.json
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
from harness import wheel
from harness.cli import add_learning, add_out, add_seeds, learning_overrides, parser
from harness.digits import NUM_CLASSES, digits_uint8, draw_labels, pool_test_split
from harness.results import markdown_table, read_json, write_json
from harness.stats import Stopwatch
from sklearn.semi_supervised import SelfTrainingClassifier
from sklearn.svm import SVC

from flywheel.config import LearningSettings


def split(seed: int, labels_per_class: int) -> dict[str, np.ndarray]:
    images, y = digits_uint8()
    pool, test = pool_test_split(y, seed)
    labeled = pool[draw_labels(y[pool], labels_per_class, seed)]
    unlabeled = np.setdiff1d(pool, labeled)
    return {"images": images, "y": y, "labeled": labeled, "pool": unlabeled, "test": test}


def run_flywheel(s: dict[str, np.ndarray], learning: LearningSettings, cycles: int) -> dict:
    parts = {"train": s["labeled"], "test": s["test"], "pool": s["pool"]}
    classes = tuple(str(c) for c in range(NUM_CLASSES))
    return wheel.run_flywheel(s["images"], s["y"], classes, parts, learning, cycles)


def run_supervised(s: dict[str, np.ndarray], learning: LearningSettings) -> float:
    return wheel.supervised_accuracy(
        s["images"], s["y"], s["labeled"], s["test"], learning, NUM_CLASSES
    )


def run_sklearn(s: dict[str, np.ndarray]) -> dict[str, float]:
    x = s["images"].reshape(len(s["y"]), -1) / 255.0
    train = np.concatenate([s["labeled"], s["pool"]])
    y_train = np.full(len(train), -1)
    y_train[: len(s["labeled"])] = s["y"][s["labeled"]]
    self_training = SelfTrainingClassifier(SVC(probability=True, gamma="scale"))
    self_training.fit(x[train], y_train)
    return {
        "label_spreading": wheel.label_spreading_accuracy(
            s["images"], s["y"], s["labeled"], s["pool"], s["test"]
        ),
        "self_training": float((self_training.predict(x[s["test"]]) == s["y"][s["test"]]).mean()),
    }


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 5, 10])
    add_seeds(ap, [0, 1, 2, 3, 4])
    ap.add_argument("--cycles", type=int, default=5)
    add_learning(ap)
    add_out(ap, Path("bench/results/learning.json"))
    ap.add_argument("--report", type=Path, nargs="+", help="only print the table of these JSONs")
    args = ap.parse_args()
    if args.report:
        print(markdown([row for path in args.report for row in read_json(path)]))
        return
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # sklearn 1.9 deprecates SVC(probability=True); it is still the documented reference.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="sklearn")
    results = []
    overrides = learning_overrides(args)
    for n in args.labels_per_class:
        for seed in args.seeds:
            s = split(seed, n)
            learning = LearningSettings(**{**overrides, "seed": seed})
            with Stopwatch() as t_fw:
                fw = run_flywheel(s, learning, args.cycles)
            row = {
                "labels_per_class": n,
                "seed": seed,
                "flywheel": fw["champion_accuracy"],
                "flywheel_seconds": round(t_fw.seconds, 1),
                "cycles": fw["cycles"],
                # The baseline trains with the augmentation preset the wheel's profile chose.
                "supervised": run_supervised(
                    s, learning.model_copy(update={"augment": fw["profile"]["augment"]})
                ),
                **run_sklearn(s),
                "learning": overrides,
            }
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "cycles"}), flush=True)
            write_json(args.out, results, indent=1)  # after each run: keep partials
    print(markdown(results))


def markdown(results: list[dict]) -> str:
    rows = []
    for n in sorted({r["labels_per_class"] for r in results}):
        runs = [r for r in results if r["labels_per_class"] == n]

        def mean(key: str, runs: list[dict] = runs) -> str:
            return f"{100 * np.mean([r[key] for r in runs]):.1f}"

        prec = [r["cycles"][-1]["pseudo_precision"] for r in runs]
        cov = [r["cycles"][-1]["pseudo_coverage"] for r in runs]
        prec_s = (
            f"{100 * np.mean([p for p in prec if p is not None]):.1f}"
            if any(p is not None for p in prec)
            else "-"
        )
        means = [mean(k) for k in ("flywheel", "supervised", "label_spreading", "self_training")]
        seconds = f"{np.mean([r['flywheel_seconds'] for r in runs]):.0f}"
        rows.append([n, *means, prec_s, f"{100 * np.mean(cov):.1f}", len(runs), seconds])
    columns = ["labels/class", "flywheel", "supervised only", "LabelSpreading", "SelfTraining"]
    columns += ["pseudo precision (last)", "pseudo coverage (last)", "seeds", "seconds/seed"]
    return markdown_table(columns, "rrrrrrrrr", rows)


if __name__ == "__main__":
    main()
