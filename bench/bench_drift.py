"""Drift watch: what MMD² looks like without drift, and with it, on digits.

Per seed (0-2) the 1,797 sklearn digits are split in half: a champion (small_cnn, width 32,
20 epochs, as the flywheel trains it on CPU) is trained on the first half, which is the
reference (``DriftSettings.reference`` = 2000 takes all of it); "recent" inputs are drawn
from the unseen second half. This is the no-drift case the service sees: new inputs from
the training distribution, which the champion did not train on.

- null: 200 draws of n recent inputs (n = 50, 200, 500) -> MMD² distribution, its 95th/99th
  percentiles (the threshold is chosen from these) and the false-alarm rate of the rule;
- shifts: 20 draws of 50 or 150 recent inputs rotated 20°, inverted, dimmed to 50 %, with
  Gaussian noise (sd 40/255), shifted 2 px, drawn from two classes only, or unchanged ->
  MMD², kNN ratio and the share the rule ``mmd > threshold and p < 0.05`` (200
  permutations) flags.

Feature spaces: the champion's backbone (what ``measure_drift`` uses), a weak champion
(width 8, 3 epochs: the tests' TINY settings) and PCA-32 of the pixels.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_drift.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness.cli import RESULTS, add_out, add_seeds, parser
from harness.digits import digits_uint8
from harness.results import read_json, write_json
from PIL import Image
from sklearn.decomposition import PCA

from flywheel.config import DriftSettings
from flywheel.insights.drift import (
    knn_distance_ratio,
    median_gamma,
    mmd_permutation_p_value,
    mmd_rbf,
)
from flywheel.learn.ssl.embed import embed
from flywheel.learn.training import TrainConfig, train_classifier


def _each(images: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(im)), dtype=np.uint8) for im in images])


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "rotated 20°": lambda x, _: _each(x, lambda im: im.rotate(20, Image.Resampling.BILINEAR)),
    "inverted": lambda x, _: 255 - x,
    "dimmed to 50 %": lambda x, _: (x // 2).astype(np.uint8),
    "noise sd 40": lambda x, rng: np.clip(x + rng.normal(0, 40, x.shape), 0, 255).astype(np.uint8),
    "shifted 2 px": lambda x, _: np.roll(x, 2, axis=2),
}


def draw(
    name: str,
    n: int,
    images: np.ndarray,
    labels: np.ndarray,
    unseen: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """n recent inputs from the unseen half, shifted as ``name`` says."""
    if name == "two classes only":
        return images[rng.choice(unseen[np.isin(labels[unseen], (0, 1))], n, replace=False)]
    picked = images[unseen[rng.choice(len(unseen), n, replace=False)]]
    return picked if name == "no shift" else SHIFTS[name](picked, rng)


def embedders(train_x: np.ndarray, train_y: np.ndarray, seed: int) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    for name, cfg in (
        ("champion", TrainConfig(width=32, epochs=20, seed=seed)),
        ("weak champion", TrainConfig(width=8, epochs=3, steps_per_epoch=2, seed=seed)),
    ):
        model = train_classifier(train_x, train_y, None, cfg, 10).model
        out[name] = lambda x, m=model: embed(m.backbone, x)
    pca = PCA(32, random_state=0).fit(train_x.reshape(len(train_x), -1) / 255.0)

    def pca_embed(x: np.ndarray) -> np.ndarray:
        z = pca.transform(x.reshape(len(x), -1) / 255.0)
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    out["pca32"] = pca_embed
    return out


def run(seeds: list[int], null_draws: int, shift_draws: int) -> dict:
    images, labels = digits_uint8()
    null: dict[str, dict[int, list[float]]] = {}
    shifts: dict[str, dict[str, list[dict]]] = {}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(images))
        train, unseen = order[: len(order) // 2], order[len(order) // 2 :]
        t = time.perf_counter()
        spaces = embedders(images[train], labels[train], seed)
        print(f"seed {seed}: embedders in {time.perf_counter() - t:.1f}s", flush=True)
        for space, fn in spaces.items():
            ref = fn(images[train])
            unseen_f = fn(images[unseen])
            for n in (50, 200, 500):
                vals = null.setdefault(space, {}).setdefault(n, [])
                for _ in range(null_draws):
                    pick = rng.choice(len(unseen), n, replace=False)
                    vals.append(mmd_rbf(unseen_f[pick], ref))
            cases = [*SHIFTS, "two classes only", "no shift"]
            for name in cases:
                for n in (50, 150):
                    for _ in range(shift_draws):
                        recent = fn(draw(name, n, images, labels, unseen, rng))
                        g = median_gamma(recent, ref)
                        shifts.setdefault(space, {}).setdefault(f"{name}|{n}", []).append(
                            {
                                "mmd": mmd_rbf(recent, ref, g),
                                "p": mmd_permutation_p_value(recent, ref, 200, 0, g),
                                "knn": knn_distance_ratio(ref, recent),
                            }
                        )
            print(f"  {space} done", flush=True)
    return {"null": null, "shifts": shifts}


def summarise(raw: dict, threshold: float) -> dict:
    out: dict = {"threshold": threshold, "null": [], "shifts": []}
    for space, by_n in raw["null"].items():
        for n, vals in by_n.items():
            v = np.array(vals)
            out["null"].append(
                {
                    "space": space,
                    "n_recent": n,
                    "median": float(np.median(v)),
                    "p95": float(np.percentile(v, 95)),
                    "p99": float(np.percentile(v, 99)),
                    "above_threshold": float((v > threshold).mean()),
                }
            )
    for space, cases in raw["shifts"].items():
        for key, runs in cases.items():
            name, n = key.split("|")
            mmd = np.array([r["mmd"] for r in runs])
            p = np.array([r["p"] for r in runs])
            out["shifts"].append(
                {
                    "space": space,
                    "shift": name,
                    "n_recent": int(n),
                    "mmd_median": float(np.median(mmd)),
                    "knn_ratio_median": float(np.median([r["knn"] for r in runs])),
                    "p_below_0.05": float((p < 0.05).mean()),
                    "flagged": float(((mmd > threshold) & (p < 0.05)).mean()),
                }
            )
    return out


def main() -> None:
    ap = parser(__doc__)
    add_seeds(ap, [0, 1, 2])
    ap.add_argument("--null-draws", type=int, default=200)
    ap.add_argument("--shift-draws", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=DriftSettings().mmd_threshold)
    add_out(ap, RESULTS / "drift.json", "summary")
    ap.add_argument("--raw", type=Path, help="also keep every draw here (to try thresholds)")
    ap.add_argument("--from-raw", type=Path, help="summarise a --raw file instead of running")
    args = ap.parse_args()
    if args.from_raw:
        saved = read_json(args.from_raw)
        raw = {
            "null": {s: {int(n): v for n, v in by_n.items()} for s, by_n in saved["null"].items()},
            "shifts": saved["shifts"],
        }
        args.seeds = saved["seeds"]
    else:
        raw = run(args.seeds, args.null_draws, args.shift_draws)
        if args.raw:
            write_json(args.raw, {"seeds": args.seeds, **raw}, indent=None)
    result = {"seeds": args.seeds, **summarise(raw, args.threshold)}
    for row in result["null"]:
        print(row)
    for row in result["shifts"]:
        print(row)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
