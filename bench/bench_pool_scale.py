"""A whole cycle over growing synthetic pools: time per 1,000 pool images and peak memory.

Pools are sklearn digits under random affine transforms and noise (``synthetic_digits``),
ingested like real samples (PNG blobs, database rows), 5 seed labels per class and a
300-image test split. Every size runs ``--cycles`` cycles (2) on the embedded default with
the same fixed learning budget (SSL for one epoch, FixMatch for a fixed number of steps) and
a decoded-image cache far smaller than the largest pool (``learning.pool_cache_mb``), so
memory that grew with the pool would show. A fresh project's first cycle has no champion;
the next ones do, and score the whole pool with it (the steady state). Each size runs in a
fresh process; peak RSS is that process's VmHWM, reset before each cycle (the cycle's own
peak, the ingest's and the earlier cycle's reset away). Each row also has the anonymous
memory's peak (RssAnon, sampled every 50 ms; VmRSS also counts shared-library pages that
come and go with the page cache) and each step's peaks with the function they were reached
in.

    .venv/bin/python bench/bench_pool_scale.py --sizes 5000 20000 80000
    .venv/bin/python bench/bench_pool_scale.py --sizes --select-sizes 1000000 10000

``--select-sizes`` runs the select step alone (plan, every shard embedded and scored, merge):
the part of a cycle that reads the whole pool, for sizes a whole cycle would take hours at.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness.cli import RESULTS, add_out, parser, run_json, self_command
from harness.resources import StepMemoryTrace, reset_peak_rss, status_kb

BUDGET = {
    "ssl_epochs": 1,
    "fixmatch_epochs": 2,
    "train_epochs": 2,
    "continue_epochs": 1,
    "steps_per_epoch": 16,
    "pool_cache_mb": 32,
    "augment": "digits",
    "max_review": 200,
}


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8 uint8 digits: random affine (rotation, scale, shift) plus noise."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    d = load_digits()
    base = (d.images * (255 / 16)).astype(np.float32)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base), n)
    out = np.empty((n, 8, 8), dtype=np.uint8)
    for i, j in enumerate(pick):
        angle = np.deg2rad(rng.uniform(-12, 12))
        scale = rng.uniform(0.9, 1.1)
        c, s = np.cos(angle) / scale, np.sin(angle) / scale
        matrix = np.array([[c, -s], [s, c]])
        offset = np.array([3.5, 3.5]) - matrix @ np.array([3.5, 3.5]) + rng.uniform(-0.7, 0.7, 2)
        img = ndimage.affine_transform(base[j], matrix, offset, order=1, mode="constant")
        img += rng.normal(0, 12, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out, d.target[pick]


def synthetic_candidates(n: int) -> list[Any]:
    """``n`` pool samples, 5 seed labels per class and 300 test samples, as ingest
    candidates (PNG bytes made when read), in a fixed shuffled order."""
    from harness.digits import png_bytes

    from flywheel.store.ingest import Candidate

    images, labels = synthetic_digits(n + 350)
    seed_rows = np.concatenate([np.flatnonzero(labels[: n + 50] == c)[:5] for c in range(10)])
    split = np.full(n + 350, "pool", dtype=object)
    split[seed_rows] = "train"
    split[n + 50 :] = "test"
    return [
        Candidate(f"{split[i]}/{i}", lambda i=i: png_bytes(images[i]), str(labels[i]), split[i])
        for i in np.random.default_rng(1).permutation(n + 350)
    ]


def measure(
    n: int,
    run: str = "cycle",
    ssl_epochs: int | None = None,
    workdir: Path | None = None,
    cycles: int = 2,
) -> list[dict[str, Any]]:
    """One size in this process: ingest, then ``run``: ``cycles`` whole cycles one after
    another ("cycle"; a fresh project's first has no champion, the next ones do and score
    the pool with it), or one cycle's consensus and select steps only ("select": plan,
    embed and score every shard, merge). A row per cycle; the peak is reset between them.

    ``ssl_epochs`` overrides the budget's. ``workdir``: keep the ingested project in
    ``<workdir>/<run>-<n>`` and reuse it next time (ingest is not what is measured; a
    million samples take about 25 minutes to ingest here). A reused project's unfinished
    cycles are marked failed, its embedding store is emptied, and a new cycle is
    measured."""
    import tempfile
    from contextlib import nullcontext

    from flywheel.config import LearningSettings, Settings
    from flywheel.cycle.guard import fail_interrupted_cycles
    from flywheel.cycle.runner import run_cycle
    from flywheel.cycle.state import load_cycle, start_cycle
    from flywheel.cycle.steps.consensus import run_consensus_step
    from flywheel.cycle.steps.select import run_select_step
    from flywheel.learn.embedding_store import STORE_FOLDER
    from flywheel.learn.registry import ModelRegistry
    from flywheel.store.ingest import ingest_candidates
    from flywheel.workspace import open_workspace

    budget = {**BUDGET, **({} if ssl_epochs is None else {"ssl_epochs": ssl_epochs})}
    kept = workdir / f"{run}-{n}" if workdir is not None else None
    place = nullcontext(str(kept)) if kept else tempfile.TemporaryDirectory(prefix="fw-scale-")
    with place as tmp:
        learning = LearningSettings(**budget)
        settings = Settings(data_dir=tmp, learning=learning)
        ws = open_workspace(settings)
        marker = Path(tmp) / "ingested.json"
        if marker.exists():
            ingest_s = json.loads(marker.read_text())["ingest_s"]
            fail_interrupted_cycles(ws.db)
            # An earlier run's embeddings would be reused (a cycle embeds only what the
            # store lacks): every measured run embeds its pool from scratch.
            shutil.rmtree(Path(settings.storage_root) / STORE_FOLDER, ignore_errors=True)
        else:
            cands = synthetic_candidates(n)
            t0 = time.perf_counter()
            ingest_candidates(ws.db, ws.blobs, cands, "scale", settings.ingest)
            ingest_s = time.perf_counter() - t0
            marker.write_text(json.dumps({"ingest_s": ingest_s, "pool": n}))
            del cands  # the candidates hold the generated images: not the cycle's memory
            gc.collect()
        registry = ModelRegistry.from_settings(settings)
        rows = []
        for _ in range(cycles if run == "cycle" else 1):
            champion = registry.champion() is not None
            reset_peak_rss()
            base_kb, base_anon_kb = status_kb("VmRSS"), status_kb("RssAnon")
            t0 = time.perf_counter()
            with StepMemoryTrace() as trace:
                if run == "cycle":
                    metrics = run_cycle(ws, registry, learning).metrics
                else:
                    cycle_id = start_cycle(ws, learning)
                    run_consensus_step(ws, cycle_id)
                    run_select_step(ws, registry, cycle_id)
                    selection = load_cycle(ws, cycle_id).outputs["selection"]
                    metrics = {**selection, "test_accuracy": None}
            cycle_s = time.perf_counter() - t0
            peak_kb = status_kb("VmHWM")
            steps = trace.peaks()
            pool = metrics["pool"]
            rows.append(
                {
                    "run": run,
                    "pool": pool,
                    "champion": champion,  # a cycle with a champion also scores the pool
                    "ingest_s": None if ingest_s is None else round(ingest_s, 1),
                    "cycle_s": round(cycle_s, 1),
                    "s_per_1k": round(1000 * cycle_s / pool, 2),
                    "peak_rss_mib": round(peak_kb / 1024, 1),
                    "cycle_growth_mib": round((peak_kb - base_kb) / 1024, 1),
                    # sampled every 50 ms: the anonymous memory's peak, and each step's
                    "peak_anon_mib": max((float(p["anon_mib"]) for p in steps.values()), default=0),
                    "base_anon_mib": round(base_anon_kb / 1024, 1),
                    "steps": steps,
                    "test_accuracy": metrics["test_accuracy"],
                    "accepted": metrics["accepted"],
                }
            )
        ws.close()
    return rows


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "child":
        ssl, work, cycles = json.loads(sys.argv[4])
        rows = measure(int(sys.argv[2]), sys.argv[3], ssl, Path(work) if work else None, cycles)
        print(json.dumps(rows), flush=True)
        return
    ap = parser(__doc__)
    ap.add_argument("--sizes", type=int, nargs="*", default=[5_000, 20_000, 80_000])
    ap.add_argument(
        "--select-sizes",
        type=int,
        nargs="*",
        default=[],
        help="pool sizes to run the select step alone at (embed + select), after the cycles",
    )
    ap.add_argument("--ssl-epochs", type=int, default=None, help="instead of the budget's")
    ap.add_argument("--workdir", type=Path, default=None, help="keep ingested pools here")
    ap.add_argument("--cycles", type=int, default=2, help="cycles measured at each size")
    add_out(ap, RESULTS / "pool_scale.json")
    args = ap.parse_args()
    work = str(args.workdir.resolve()) if args.workdir else None
    extra = json.dumps([args.ssl_epochs, work, args.cycles])
    rows: list[dict[str, Any]] = []
    runs = [("cycle", n) for n in args.sizes] + [("select", n) for n in args.select_sizes]
    for run, n in runs:
        got = run_json(self_command(__file__, "child", str(n), run, extra))
        rows.extend(got)
        print(json.dumps(got), flush=True)
        budget = {**BUDGET, **({} if args.ssl_epochs is None else {"ssl_epochs": args.ssl_epochs})}
        args.out.write_text(json.dumps({"budget": budget, "rows": rows}, indent=2))
    print("| run | champion | pool | s | s / 1k images | peak RSS MiB | growth MiB | test acc |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        acc = "" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}"
        print(
            f"| {r['run']} | {'yes' if r['champion'] else 'no'} | {r['pool']:,} | "
            f"{r['cycle_s']} | {r['s_per_1k']} | {r['peak_rss_mib']} | "
            f"{r['cycle_growth_mib']} | {acc} |"
        )
    for run in ("cycle", "select"):
        for champion in (False, True):
            mine = [r for r in rows if r["run"] == run and r["champion"] == champion]
            mine = sorted(mine, key=lambda r: r["pool"])
            if len(mine) > 1 and mine[0]["pool"] < mine[-1]["pool"]:
                first, last = mine[0], mine[-1]
                print(
                    f"{run} ({'with' if champion else 'no'} champion), {last['pool']:,} over "
                    f"{first['pool']:,}: time per image "
                    f"x{last['s_per_1k'] / first['s_per_1k']:.2f}, "
                    f"peak RSS x{last['peak_rss_mib'] / first['peak_rss_mib']:.2f}"
                )


if __name__ == "__main__":
    main()
