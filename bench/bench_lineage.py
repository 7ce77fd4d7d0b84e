"""Lineage at a size: exports in each layout, and a rollback's label restore, as ratios.

A project of synthetic digits (``bench_pool_scale.synthetic_candidates``) ingested as PNG
samples; a seed version, then ``--pseudo`` pseudo-labels written as a cycle writes them (with
their evidence) and a second version. Measured in one process, one after another:

- ``data export`` of the second version as parquet, csv, imagefolder and hf, against a plain
  copy of the same blob files (the least an export that writes every image can cost);
- ``restore_labels`` back to the seed version (every pseudo-label retracted) and forward
  again (every one restored with its evidence), against a snapshot of the same labels.

    .venv/bin/python bench/bench_lineage.py --pool 20000 --pseudo 15000
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pool_scale import synthetic_candidates
from harness.cli import RESULTS, add_out, parser


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(pool: int, pseudo: int) -> dict[str, Any]:
    from sqlalchemy import select

    from flywheel.config import Settings
    from flywheel.cycle.champion import restore_labels
    from flywheel.datasets.exports import export_version
    from flywheel.db import Label, Sample
    from flywheel.store.ingest import ingest_candidates
    from flywheel.workspace import open_workspace

    with tempfile.TemporaryDirectory(prefix="flywheel-lineage-") as tmp:
        ws = open_workspace(Settings(data_dir=Path(tmp) / "data"))
        ingest_candidates(ws.db, ws.blobs, synthetic_candidates(pool), "bench", ws.settings.ingest)
        seed, _ = ws.versions.snapshot("seed labels")
        with ws.db.session() as s:
            ids = s.scalars(
                select(Sample.id).where(Sample.split == "pool").order_by(Sample.id).limit(pseudo)
            ).all()
            s.add_all(
                Label(
                    sample_id=sid,
                    label=str(i % 10),
                    source="pseudo",
                    confidence=0.99,
                    method="knn+classifier",
                    evidence={
                        "score": 0.99,
                        "knn_share": 0.9,
                        "threshold": 0.95,
                        "model_version": "1",
                        "embedding_fingerprint": "e" * 24,
                    },
                )
                for i, sid in enumerate(ids)
            )
        (version, _), snapshot_s = timed(lambda: ws.versions.snapshot("with pseudo-labels"))
        rows: dict[str, Any] = {"rows": version.num_rows, "snapshot_s": round(snapshot_s, 2)}

        out = Path(tmp) / "out"
        blob_dir = Path(ws.settings.storage_root) / "blobs"
        _, copy_s = timed(lambda: shutil.copytree(blob_dir, out / "copy"))
        rows["copy_blobs_s"] = round(copy_s, 2)
        for fmt in ("parquet", "csv", "imagefolder", "hf"):
            dest = out / (f"v.{fmt}" if fmt in ("parquet", "csv") else fmt)
            t0 = time.perf_counter()
            export_version(ws.versions, ws.blobs, version.id, dest, fmt)
            seconds = time.perf_counter() - t0
            rows[f"export_{fmt}_s"] = round(seconds, 2)
        back, back_s = timed(lambda: restore_labels(ws, seed.id, "rollback", version.id))
        fwd, fwd_s = timed(lambda: restore_labels(ws, version.id, "promote", seed.id))
        assert ws.versions.snapshot("forward")[0].id == version.id
        rows.update(
            rollback_s=round(back_s, 2),
            retracted=back.retracted,
            forward_s=round(fwd_s, 2),
            restored=fwd.restored,
        )
        ws.close()
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--pool", type=int, default=20_000)
    ap.add_argument("--pseudo", type=int, default=15_000)
    add_out(ap, RESULTS / "lineage.json")
    args = ap.parse_args()
    r = measure(args.pool, args.pseudo)
    args.out.write_text(json.dumps(r, indent=2))
    print(json.dumps(r))
    print("| operation | s | over its baseline |\n|---|---:|---:|")
    for fmt in ("parquet", "csv", "imagefolder", "hf"):
        s = r[f"export_{fmt}_s"]
        print(f"| export {fmt} | {s} | x{s / r['copy_blobs_s']:.2f} of copying the blobs |")
    for what in ("rollback", "forward"):
        s = r[f"{what}_s"]
        print(f"| {what} labels | {s} | x{s / r['snapshot_s']:.2f} of a snapshot |")


if __name__ == "__main__":
    main()
