"""Ingest throughput: Flywheel's ingest vs. a bare "hash and copy" baseline, same run.

The baseline does the least any importer must do (read bytes, sha256, write a file); the
ratio shows what validation (full decode), dedup and the metadata transaction cost.

    .venv/bin/python bench/bench_ingest.py --n 20000 [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from flywheel.config import Settings
from flywheel.store.ingest import SplitPlan, imagefolder_candidates, ingest_candidates
from flywheel.workspace import open_workspace


def make_folder(root: Path, n: int, seed: int = 0) -> None:
    """n distinct 8x8 PNGs: real digit scans with a little noise, in class folders."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for i in range(n):
        j = i % len(digits.images)
        pixels = digits.images[j] * (255 / 16) + rng.normal(0, 4, (8, 8))
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
        folder = root / str(digits.target[j])
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:07d}.png")


def baseline(files: list[Path], dest: Path) -> None:
    for path in files:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        out = dest / sha[:2] / sha
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--db-url", default=None, help="default: SQLite in a temp dir")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        src = work / "src"
        make_folder(src, args.n)
        files = sorted(p for p in src.rglob("*.png"))
        candidates = imagefolder_candidates(src)

        t0 = time.perf_counter()
        baseline(files, work / "baseline")
        t_base = time.perf_counter() - t0

        settings = Settings(data_dir=work / "data", database={"url": args.db_url})
        ws = open_workspace(settings)
        t0 = time.perf_counter()
        report = ingest_candidates(
            ws.db, ws.blobs, candidates, "bench", settings.ingest, SplitPlan(labels_per_class=5)
        )
        t_ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = ingest_candidates(ws.db, ws.blobs, candidates, "bench", settings.ingest)
        t_dedup = time.perf_counter() - t0
        ws.close()
        assert report.added == args.n and len(again.duplicates) == args.n

        db = "PostgreSQL" if args.db_url else "SQLite"
        print(f"| step ({args.n:,} 8x8 PNGs, {db}) | seconds | images/s | vs baseline |")
        print("|---|---:|---:|---:|")
        for name, t in (
            ("baseline: read + sha256 + write file", t_base),
            ("flywheel ingest (decode, dedup, blobs, DB)", t_ingest),
            ("flywheel re-ingest (all duplicates)", t_dedup),
        ):
            print(f"| {name} | {t:.2f} | {args.n / t:,.0f} | {t / t_base:.2f}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
