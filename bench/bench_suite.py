"""The generalization suite: the wheel on several real-image data sets, against baselines
from the same run, with the protocol of BENCHMARKS §1 and a frozen test split.

Data sets (``harness.image_sets``): sklearn digits (8x8 grey), grey 32x32 photo patches,
colour 48x48 photo patches and 25x25 LFW faces against non-faces, all built from images
that ship inside scikit-image and scikit-learn. Per data set and seed: N seed labels per
class, the rest of the non-test images is the pool (its truth hidden from the wheel, used
only to score pseudo-labels). Compared in the same run:

- ``flywheel``: the real pipeline with the defaults a newcomer gets (only the seed is set,
  unless ``--learning KEY=VALUE`` says otherwise), the champion's test accuracy after every
  cycle, pseudo-label precision and coverage, and the data profile the wheel chose;
- ``supervised``: Flywheel's classifier on the N labels alone (the data's channels, the
  augmentation preset the wheel's profile chose);
- ``label_spreading``: sklearn's LabelSpreading on pixels;
- ``full``: Flywheel's classifier on every pool label (the ceiling of what labels give).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_suite.py --seeds 0 1 2 --cycles 5 \
        --jobs 2 --plots docs
    .venv/bin/python bench/bench_suite.py --report bench/results/suite.json --plots docs

``--jobs`` runs that many (set, seed) runs side by side, each with its share of the cores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import wheel
from harness.cli import add_learning, add_out, add_seeds, learning_overrides, parser
from harness.image_sets import SETS, ImageSet, split
from harness.results import markdown_table, pyplot, read_json, save_figure, write_json
from harness.stats import Stopwatch

from flywheel.config import LearningSettings


def run(
    s: ImageSet,
    seed: int,
    labels_per_class: int,
    cycles: int,
    overrides: dict[str, str],
    baselines: bool = True,
) -> dict[str, Any]:
    sp = split(s, labels_per_class, seed)
    learning = LearningSettings(**{**overrides, "seed": seed})
    parts = {"train": sp.labeled, "test": sp.test, "pool": sp.pool}
    with Stopwatch() as t:
        fw = wheel.run_flywheel(s.images, s.labels, s.classes, parts, learning, cycles)
    c = len(s.classes)
    everything = np.concatenate([sp.labeled, sp.pool])
    # The baselines train with the augmentation preset the wheel's profile chose.
    learning = learning.model_copy(update={"augment": fw["profile"]["augment"]})
    row: dict[str, Any] = {
        "set": s.name,
        "seed": seed,
        "labels_per_class": labels_per_class,
        "flywheel": fw["champion_accuracy"],
        "champion_per_cycle": champion_per_cycle(fw["cycles"]),
        "cycles": fw["cycles"],
        "profile": fw["profile"],
        "seconds_per_cycle": round(t.seconds / cycles, 1),
    }
    if not baselines:  # an ablation: the same run's baselines are elsewhere
        return {**row, **dict.fromkeys(BASELINES)}
    return {
        **row,
        "supervised": wheel.supervised_accuracy(
            s.images, s.labels, sp.labeled, sp.test, learning, c
        ),
        "label_spreading": wheel.label_spreading_accuracy(
            s.images, s.labels, sp.labeled, sp.pool, sp.test
        ),
        "full": wheel.supervised_accuracy(s.images, s.labels, everything, sp.test, learning, c),
    }


def _die_with_parent(every: float = 2.0) -> None:
    """Exit this worker once the suite's process is gone (the worker is then re-parented),
    so killing the suite does not leave its workers training on."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker_setup(jobs: int) -> None:
    _die_with_parent()
    # Each process gets its share of the cores: two single-threaded runs side by side beat
    # one two-threaded run on small convolutions, where threads mostly wait.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // jobs))
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="sklearn")


def run_job(
    name: str,
    seed: int,
    labels_per_class: int,
    cycles: int,
    overrides: dict[str, str],
    baselines: bool = True,
) -> dict[str, Any]:
    row = run(SETS[name](), seed, labels_per_class, cycles, overrides, baselines)
    row["learning"] = overrides
    return row


def _in_order(rows: list[dict[str, Any]], jobs: list[tuple[str, int]]) -> list[dict[str, Any]]:
    rank = {job: i for i, job in enumerate(jobs)}
    return sorted(rows, key=lambda r: rank[(r["set"], r["seed"])])


def champion_per_cycle(cycles: list[dict[str, Any]]) -> list[float]:
    """The served champion's test accuracy after each cycle (a rejected candidate leaves
    the one before serving)."""
    out: list[float] = []
    for c in cycles:
        out.append(c["test_accuracy"] if c["promoted"] or not out else out[-1])
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    rows = []
    for name in dict.fromkeys(r["set"] for r in results):
        runs = [r for r in results if r["set"] == name]
        per_cycle = np.array([r["champion_per_cycle"] for r in runs])
        last = [r["cycles"][-1] for r in runs]
        precision = [c["pseudo_precision"] for c in last if c["pseudo_precision"] is not None]
        rows.append(
            [
                name,
                " / ".join(f"{100 * a:.1f}" for a in per_cycle.mean(0)),
                f"{100 * per_cycle[:, -1].min():.1f}",
                f"{100 * np.mean(precision):.1f}" if precision else "-",
                f"{100 * np.mean([c['pseudo_coverage'] or 0.0 for c in last]):.1f}",
                *(_mean_pct([r[k] for r in runs]) for k in BASELINES),
                len(runs),
                f"{np.mean([r['seconds_per_cycle'] for r in runs]):.0f}",
            ]
        )
    columns = ["data set", "champion per cycle", "worst seed", "pseudo precision (last)"]
    columns += ["pseudo coverage (last)", "supervised only", "LabelSpreading", "full labels"]
    columns += ["seeds", "s/cycle"]
    return markdown_table(columns, "lrrrrrrrrr", rows)


BASELINES = ("supervised", "label_spreading", "full")


def _mean_pct(values: list[float | None]) -> str:
    return "-" if any(v is None for v in values) else f"{100 * np.mean(values):.1f}"


BASELINE_STYLE = {"supervised": ":", "label_spreading": "-.", "full": "--"}


def plot_sets(results: list[dict[str, Any]], folder: Path) -> list[Path]:
    """One PNG per data set: the champion per cycle (mean, band from worst to best seed),
    the baselines of the same runs, and the last cycles' pseudo-label precision/coverage."""
    plt = pyplot()
    paths = []
    for name in dict.fromkeys(r["set"] for r in results):
        runs = [r for r in results if r["set"] == name]
        acc = 100 * np.array([r["champion_per_cycle"] for r in runs])
        x = np.arange(1, acc.shape[1] + 1)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
        left.plot(x, acc.mean(0), "o-", color="C0", label=f"flywheel champion ({len(runs)} seeds)")
        left.fill_between(x, acc.min(0), acc.max(0), color="C0", alpha=0.2)
        for key, style in BASELINE_STYLE.items():
            if any(r[key] is None for r in runs):
                continue
            mean = 100 * np.mean([r[key] for r in runs])
            left.axhline(mean, ls=style, color="grey", label=f"{key} {mean:.1f}")
        left.set(xlabel="cycle", ylabel="test accuracy (%)", title=name, xticks=x)
        left.legend(fontsize=7, loc="lower right")
        for key, colour in (("pseudo_precision", "C2"), ("pseudo_coverage", "C1")):
            vals = 100 * np.array(
                [[c[key] if c[key] is not None else np.nan for c in r["cycles"]] for r in runs]
            )
            right.plot(x, np.nanmean(vals, 0), "o-", color=colour, label=key.replace("_", " "))
        right.set(xlabel="cycle", ylabel="%", title="accepted pseudo-labels", xticks=x)
        right.set_ylim(0, 101)
        right.legend(fontsize=7, loc="lower right")
        paths.append(save_figure(fig, folder / f"suite_{name}.png"))
    return paths


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    ap.add_argument("--labels-per-class", type=int, default=5)
    add_seeds(ap, [0, 1, 2])
    ap.add_argument("--cycles", type=int, default=5)
    add_learning(ap)
    add_out(ap, Path("bench/results/suite.json"))
    ap.add_argument("--report", type=Path, nargs="+", help="only print the table of these JSONs")
    ap.add_argument("--plots", type=Path, help="also draw one PNG per data set in this folder")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (one per core)")
    ap.add_argument(
        "--no-baselines", action="store_true", help="the wheel only (an ablation of settings)"
    )
    args = ap.parse_args()
    if args.report:
        rows = [row for path in args.report for row in read_json(path)]
        print(markdown(rows))
        if args.plots:
            plot_sets(rows, args.plots)
        return
    overrides = learning_overrides(args)
    jobs = [(name, seed) for name in args.sets for seed in args.seeds]
    results: list[dict[str, Any]] = []
    with (
        Stopwatch() as wall,
        ProcessPoolExecutor(args.jobs, get_context("spawn"), _worker_setup, (args.jobs,)) as pool,
    ):
        futures = [
            pool.submit(
                run_job,
                name,
                seed,
                args.labels_per_class,
                args.cycles,
                overrides,
                not args.no_baselines,
            )
            for name, seed in jobs
        ]
        for future in as_completed(futures):
            row = future.result()
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "cycles"}), flush=True)
            write_json(args.out, _in_order(results, jobs), indent=1)  # keep partials
    results = _in_order(results, jobs)
    write_json(args.out, results, indent=1)
    print(markdown(results))
    print(f"suite wall time: {wall.seconds / 60:.1f} min with {args.jobs} processes")
    if args.plots:
        plot_sets(results, args.plots)


if __name__ == "__main__":
    main()
