"""Ingest throughput: Flywheel's ingest vs. a bare "hash and copy" baseline, same run.

The baseline does the least any importer must do (read bytes, sha256, write a file); the
ratio shows what validation (full decode), dedup and the metadata transaction cost.

    .venv/bin/python bench/bench_ingest.py --n 20000 [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.cli import parser
from harness.digits import write_image_folder
from harness.results import markdown_table
from harness.stats import Stopwatch
from harness.workspaces import scratch

from flywheel.config import Settings
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import imagefolder_candidates
from flywheel.workspace import open_workspace


def baseline(files: list[Path], dest: Path) -> None:
    for path in files:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        out = dest / sha[:2] / sha
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)


def measure(work: Path, n: int, db_url: str | None) -> dict[str, float]:
    """Seconds of the baseline, the first ingest and a re-ingest of ``n`` PNGs."""
    src = work / "src"
    write_image_folder(src, n)
    files = sorted(p for p in src.rglob("*.png"))
    candidates = imagefolder_candidates(src)

    with Stopwatch() as base:
        baseline(files, work / "baseline")

    settings = Settings(data_dir=work / "data", database={"url": db_url})
    ws = open_workspace(settings)
    with Stopwatch() as first:
        report = ingest_candidates(
            ws.db, ws.blobs, candidates, "bench", settings.ingest, SplitPlan(labels_per_class=5)
        )
    with Stopwatch() as again:
        dedup = ingest_candidates(ws.db, ws.blobs, candidates, "bench", settings.ingest)
    ws.close()
    assert report.added == n and len(dedup.duplicates) == n
    return {"baseline": base.seconds, "ingest": first.seconds, "dedup": again.seconds}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--db-url", default=None, help="default: SQLite in a temp dir")
    args = ap.parse_args()
    with scratch() as work:
        t = measure(work, args.n, args.db_url)
    db = "PostgreSQL" if args.db_url else "SQLite"
    rows = [
        [name, f"{s:.2f}", f"{args.n / s:,.0f}", f"{s / t['baseline']:.2f}x"]
        for name, s in (
            ("baseline: read + sha256 + write file", t["baseline"]),
            ("flywheel ingest (decode, dedup, blobs, DB)", t["ingest"]),
            ("flywheel re-ingest (all duplicates)", t["dedup"]),
        )
    ]
    columns = [f"step ({args.n:,} 8x8 PNGs, {db})", "seconds", "images/s", "vs baseline"]
    print(markdown_table(columns, "lrrr", rows))


if __name__ == "__main__":
    main()
