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
from harness.cli import add_out, add_seeds, parser
from harness.digits import digits_uint8, draw_labels, png_bytes, pool_test_split
from harness.results import markdown_table, read_json, write_json
from harness.stats import Stopwatch
from harness.workspaces import scratch
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
from sklearn.svm import SVC

from flywheel.config import LearningSettings, Settings
from flywheel.cycle.runner import run_cycle
from flywheel.learn.recipe import augmentations, classifier_probs
from flywheel.learn.registry import ModelRegistry
from flywheel.learn.training import TrainConfig, train_classifier
from flywheel.store.ingest import Candidate, ingest_candidates
from flywheel.workspace import open_workspace


def split(seed: int, labels_per_class: int) -> dict[str, np.ndarray]:
    images, y = digits_uint8()
    pool, test = pool_test_split(y, seed)
    labeled = pool[draw_labels(y[pool], labels_per_class, seed)]
    unlabeled = np.setdiff1d(pool, labeled)
    return {"images": images, "y": y, "labeled": labeled, "pool": unlabeled, "test": test}


def run_flywheel(s: dict[str, np.ndarray], learning: LearningSettings, cycles: int) -> dict:
    images, y = s["images"], s["y"]
    cands = [
        Candidate(f"{split_name}/{i}", lambda i=i: png_bytes(images[i]), str(y[i]), split_name)
        for split_name, key in (("train", "labeled"), ("test", "test"), ("pool", "pool"))
        for i in s[key]
    ]
    with scratch() as tmp:
        settings = Settings(data_dir=tmp, learning=learning)
        ws = open_workspace(settings)
        ingest_candidates(ws.db, ws.blobs, cands, "digits", settings.ingest)
        ws.versions.snapshot("seed")
        registry = ModelRegistry.from_settings(settings)
        per_cycle = []
        for _ in range(cycles):
            r = run_cycle(ws, registry, learning)
            per_cycle.append(
                {
                    "test_accuracy": r.metrics["test_accuracy"],
                    "pseudo_precision": r.metrics["pseudo_precision"],
                    "pseudo_coverage": r.metrics["pseudo_coverage"],
                    "promoted": r.state == "promoted",
                    "embedding": r.metrics["embedding"],
                }
            )
        ws.close()
    # The champion serves predictions: the last model the gate promoted (the first always is).
    champion = [c for c in per_cycle if c["promoted"]][-1]
    return {"champion_accuracy": champion["test_accuracy"], "cycles": per_cycle}


def run_supervised(s: dict[str, np.ndarray], learning: LearningSettings) -> float:
    weak, strong = augmentations(learning)
    cfg = TrainConfig(
        backbone=learning.backbone,
        width=learning.width,
        epochs=learning.train_epochs,
        batch_size=learning.batch_size,
        weak=weak,
        strong=strong,
        seed=learning.seed,
    )
    lab = s["labeled"]
    trained = train_classifier(s["images"][lab], s["y"][lab], None, cfg, 10)
    probs = classifier_probs(trained.model, s["images"][s["test"]], 10)
    return float((probs.argmax(1) == s["y"][s["test"]]).mean())


def run_sklearn(s: dict[str, np.ndarray]) -> dict[str, float]:
    x = s["images"].reshape(len(s["y"]), -1) / 255.0
    train = np.concatenate([s["labeled"], s["pool"]])
    y_train = np.full(len(train), -1)
    y_train[: len(s["labeled"])] = s["y"][s["labeled"]]
    out = {}
    for name, model in (
        ("label_spreading", LabelSpreading(kernel="knn", n_neighbors=7, max_iter=1000)),
        ("self_training", SelfTrainingClassifier(SVC(probability=True, gamma="scale"))),
    ):
        model.fit(x[train], y_train)
        out[name] = float((model.predict(x[s["test"]]) == s["y"][s["test"]]).mean())
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--labels-per-class", type=int, nargs="+", default=[1, 5, 10])
    add_seeds(ap, [0, 1, 2, 3, 4])
    ap.add_argument("--cycles", type=int, default=5)
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
    for n in args.labels_per_class:
        for seed in args.seeds:
            s = split(seed, n)
            learning = LearningSettings(seed=seed)
            with Stopwatch() as t_fw:
                fw = run_flywheel(s, learning, args.cycles)
            row = {
                "labels_per_class": n,
                "seed": seed,
                "flywheel": fw["champion_accuracy"],
                "flywheel_seconds": round(t_fw.seconds, 1),
                "cycles": fw["cycles"],
                "supervised": run_supervised(s, learning),
                **run_sklearn(s),
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
