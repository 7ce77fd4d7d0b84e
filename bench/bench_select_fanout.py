"""The select step over pool shards: 1 against 2 GPU-queue workers, and S3 against local disk.

Pools are synthetic digits (``bench_pool_scale.synthetic_digits``) ingested like real
samples, 5 seed labels per class and a 300-image test split, with ``bench_pool_scale``'s
fixed learning budget and ``cycles.shard_size`` 1024.

- **Scale-out.** Cycle 1 through Redis with one ``--queues cpu`` worker and N ``--queues gpu``
  workers (N = 1, 2), each one task process with one thread (``OMP_NUM_THREADS=1``): a core
  per GPU-queue worker on this 2-core machine, as a GPU per worker would be. Every N starts
  from a copy of the same ingested data dir. The select step is timed off the cycle row,
  polled every 50 ms: the plan (select task started to plan recorded: SSL, judge, one task),
  the shards (to the merge's 'selecting' state: the chord, spread over the workers) and the
  merge (to the dataset version). Workers are started and ready before the clock starts.
- **S3 against local disk.** The same select step on the embedded default, in-process, with
  ``storage.root`` on local disk, then on an S3 server on loopback (moto's, a process of its
  own): blobs, embeddings and the cycle's files all go over HTTP.

    .venv/bin/python bench/bench_select_fanout.py [--pool 20000] [--s3-pool 5000]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pool_scale import BUDGET, synthetic_candidates
from harness.brokers import flush, start_worker, wait_ready
from harness.cli import RESULTS, add_out, parser
from harness.network import free_port
from harness.processes import flywheel_command, spawn, stop

SHARD_SIZE = 1024
BROKER = "redis://127.0.0.1:6379/14"
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def ingest(settings: Any, n: int) -> None:
    """``n`` pool images, 50 seed labels and 300 test images into ``settings``' project."""
    from flywheel.store.ingest import ingest_candidates
    from flywheel.workspace import open_workspace

    ws = open_workspace(settings)
    ingest_candidates(ws.db, ws.blobs, synthetic_candidates(n), "fanout", settings.ingest)
    ws.close()


def settings_for(data_dir: Path, **extra: Any) -> Any:
    from flywheel.config import Settings

    return Settings(data_dir=data_dir, learning=BUDGET, cycles={"shard_size": SHARD_SIZE}, **extra)


def watch_select(settings: Any, cycle_id: int, timeout: float = 3600) -> dict[str, float]:
    """Seconds from the select step's start to its plan, its shards' end and its version."""
    from flywheel.cycle.state import load_cycle
    from flywheel.workspace import open_workspace

    ws = open_workspace(settings)
    marks: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while "version" not in marks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cycle {cycle_id}'s select step did not end")
            c = load_cycle(ws, cycle_id)
            now = time.monotonic()
            if c.state == "failed":
                raise RuntimeError(f"cycle {cycle_id} failed: {c.error}")
            if c.state == "embedding":
                marks.setdefault("start", now)
            if "select_plan" in (c.outputs or {}):
                marks.setdefault("start", now)
                marks.setdefault("plan", now)
            if c.state in ("selecting", "versioning"):
                marks.setdefault("shards", now)
            if c.dataset_version_out:
                marks.setdefault("shards", now)
                marks["version"] = now
            time.sleep(0.05)
        plan = load_cycle(ws, cycle_id).outputs["select_plan"]
    finally:
        ws.close()
    start = marks["start"]
    return {
        "plan_s": round(marks["plan"] - start, 1),
        "shards_s": round(marks["shards"] - marks["plan"], 1),
        "merge_s": round(marks["version"] - marks["shards"], 1),
        "select_s": round(marks["version"] - start, 1),
        "shards": plan["shards"],
        "pool": plan["pool"],
    }


def scale_out(base: Path, tmp: Path, gpu_workers: int) -> dict[str, Any]:
    """Cycle 1 of a copy of ``base`` through ``gpu_workers`` GPU-queue workers."""
    import yaml

    data_dir = tmp / f"workers-{gpu_workers}"
    shutil.copytree(base, data_dir)
    settings = settings_for(data_dir, broker={"url": BROKER})
    cfg = tmp / f"workers-{gpu_workers}.yaml"
    cfg.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    cli = flywheel_command("-c", str(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    flush(BROKER)
    procs = [start_worker(cli, "cpu", "cpu", env, tmp / f"cpu-{gpu_workers}.log")]
    procs += [
        start_worker(cli, "gpu", f"gpu{k}", env, tmp / f"gpu{k}-{gpu_workers}.log")
        for k in range(gpu_workers)
    ]
    try:
        wait_ready(BROKER, data_dir, ["cpu", "gpu"], procs)
        subprocess.run([*cli, "cycle", "run", "--no-wait"], env=env, check=True)
        row = watch_select(settings, 1)
    finally:
        stop(procs)
        flush(BROKER)
    return {"gpu_workers": gpu_workers, **row}


def eager_select(settings: Any) -> dict[str, Any]:
    """The consensus step, then the select step timed, in this process."""
    from flywheel.cycle.state import load_cycle, start_cycle
    from flywheel.cycle.steps.consensus import run_consensus_step
    from flywheel.cycle.steps.select import run_select_step
    from flywheel.learn.registry import ModelRegistry
    from flywheel.workspace import open_workspace

    ws = open_workspace(settings)
    registry = ModelRegistry.from_settings(settings)
    cycle_id = start_cycle(ws, settings.learning)
    run_consensus_step(ws, cycle_id)
    t0 = time.perf_counter()
    run_select_step(ws, registry, cycle_id)
    select_s = time.perf_counter() - t0
    plan = load_cycle(ws, cycle_id).outputs["select_plan"]
    ws.close()
    return {"select_s": round(select_s, 1), "pool": plan["pool"], "shards": plan["shards"]}


def s3_against_local(tmp: Path, n: int) -> dict[str, Any]:
    os.environ.update(S3_KEYS)
    port = free_port()
    server = spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **S3_KEYS},
        out=tmp / "moto.log",
    )
    try:
        import pyarrow.fs as pafs

        deadline = time.monotonic() + 60
        while True:
            try:
                fs = pafs.S3FileSystem(
                    endpoint_override=f"127.0.0.1:{port}",
                    scheme="http",
                    region="us-east-1",
                    allow_bucket_creation=True,
                )
                fs.create_dir("bench")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        root = f"s3://bench/wheel?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        rows = {}
        for name, storage in (("local", {}), ("s3", {"root": root})):
            settings = settings_for(tmp / f"store-{name}", storage=storage)
            t0 = time.perf_counter()
            ingest(settings, n)
            ingest_s = time.perf_counter() - t0
            rows[name] = {"ingest_s": round(ingest_s, 1), **eager_select(settings)}
            print(json.dumps({name: rows[name]}), flush=True)
    finally:
        stop([server])
    return rows


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--pool", type=int, default=20_000)
    ap.add_argument("--s3-pool", type=int, default=5_000)
    add_out(ap, RESULTS / "select_fanout.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flywheel-fanout-") as name:
        tmp = Path(name)
        base = tmp / "base"
        ingest(settings_for(base), args.pool)
        rows = []
        for n in (1, 2):
            rows.append(scale_out(base, tmp, n))
            print(json.dumps(rows[-1]), flush=True)
        storage = s3_against_local(tmp, args.s3_pool)
    one, two = rows
    result = {
        "budget": BUDGET,
        "shard_size": SHARD_SIZE,
        "scale_out": rows,
        "shards_speedup": round(one["shards_s"] / two["shards_s"], 2),
        "select_speedup": round(one["select_s"] / two["select_s"], 2),
        "storage": storage,
        "s3_over_local_select": round(storage["s3"]["select_s"] / storage["local"]["select_s"], 2),
        "s3_over_local_ingest": round(storage["s3"]["ingest_s"] / storage["local"]["ingest_s"], 2),
    }
    args.out.write_text(json.dumps(result, indent=2))
    print("| GPU-queue workers | plan s | shards s | merge s | select step s |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['gpu_workers']} | {r['plan_s']} | {r['shards_s']} | {r['merge_s']} | "
            f"{r['select_s']} |"
        )
    print(
        f"2 workers against 1: shards x{result['shards_speedup']} faster, select step "
        f"x{result['select_speedup']}; S3 against local disk: select step "
        f"x{result['s3_over_local_select']}, ingest x{result['s3_over_local_ingest']}"
    )


if __name__ == "__main__":
    main()
