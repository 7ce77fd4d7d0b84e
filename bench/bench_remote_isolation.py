"""Feedback latency while URI registrations hang on dead remotes (BENCHMARKS.md section 13).

Starts a real ``flywheel serve`` whose source roots point at a black-hole endpoint (accepts,
never answers) and a refusing one, then measures feedback latency (sequential requests,
one client) twice in the same run: with no registrations, and with 50 registrations in
flight against those endpoints. Also times SIGTERM to exit with the registrations stuck.
The project (digits, a promoted untrained champion, keys, predictions) is prepared with the
library before the server starts; the registrations are real ``POST /v1/samples/uris``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_remote_isolation.py --requests 400
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
from harness.cli import RESULTS, add_out, parser
from harness.network import (
    DUMMY_S3_ENV,
    black_hole,
    free_port,
    metric,
    refusing_port,
    s3_root,
    wait_healthy,
)
from harness.processes import flywheel_command, spawn, stop
from harness.results import write_json
from harness.stats import Stopwatch, latency_summary_ms
from harness.workspaces import feedback_project, scratch

from flywheel.config import Settings

PREDICTIONS = 30  # feedback targets, taken in turn


def latencies(base: str, key: str, ids: list[str], n: int) -> list[float]:
    """Seconds of ``n`` sequential feedback requests (each must be stored: 201)."""
    headers = {"Authorization": f"Bearer {key}"}
    out = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for i in range(n):
            body = {"prediction_id": ids[i % len(ids)], "kind": "confirm", "user_id": f"b{i}"}
            start = time.perf_counter()
            r = client.post("/v1/feedback", json=body)
            out.append(time.perf_counter() - start)
            if r.status_code != 201:
                raise RuntimeError(f"feedback answered {r.status_code}: {r.text}")
    return out


def register_stuck(
    pool: ThreadPoolExecutor, base: str, key: str, n: int
) -> tuple[list[Future], int]:
    """``n`` URI registrations, alternately on the black hole and the refusing root, each
    from its own thread; returns once every one is answered or waiting on a remote read.
    The futures, and how many were still in flight then."""

    def register(i: int) -> None:
        bucket = "hole" if i % 2 == 0 else "refused"
        body = {"items": [{"uri": f"s3://{bucket}/imgs/{i}.png"}]}
        headers = {"Authorization": f"Bearer {key}"}
        with contextlib.suppress(httpx.TransportError):  # cut off by the shutdown
            httpx.post(f"{base}/v1/samples/uris", json=body, headers=headers, timeout=600)

    futures = [pool.submit(register, i) for i in range(n)]
    pending = "flywheel_remote_reads_pending"
    while metric(base, pending) + sum(f.done() for f in futures) < n:
        time.sleep(0.2)
    return futures, n - sum(f.done() for f in futures)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--registrations", type=int, default=50)
    add_out(ap, RESULTS / "remote_isolation.json")
    args = ap.parse_args()
    with scratch() as work, black_hole() as hole:
        data = work / "data"
        project = feedback_project(Settings(data_dir=data), PREDICTIONS, "shop")
        ids = project.prediction_ids
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        roots = [s3_root("hole", "imgs", f"127.0.0.1:{hole}")]
        roots.append(s3_root("refused", "imgs", f"127.0.0.1:{refusing_port()}"))
        env = {
            **os.environ,
            **DUMMY_S3_ENV,
            "FLYWHEEL_INGEST__URI_ROOTS": json.dumps(roots),
            "FLYWHEEL_INGEST__REMOTE_READ_TIMEOUT_S": "120",
            "FLYWHEEL_INGEST__REMOTE_TOTAL_TIMEOUT_S": "300",
            "FLYWHEEL_INGEST__REMOTE_ATTEMPTS": "1",
        }
        proc = spawn(
            flywheel_command("--data-dir", str(data), "serve", "--port", str(port)), env=env
        )
        pool = ThreadPoolExecutor(args.registrations)
        try:
            wait_healthy(base, proc, timeout=120)
            latencies(base, project.app_key, ids, 50)  # warm-up
            quiet = latencies(base, project.app_key, ids, args.requests)
            _, in_flight = register_stuck(pool, base, project.engineer_key, args.registrations)
            loaded = latencies(base, project.app_key, ids, args.requests)
        finally:
            with Stopwatch() as stopping:
                stop([proc], grace=60)
            pool.shutdown(wait=True)
    result = {
        "requests": args.requests,
        "registrations_in_flight": in_flight,
        "without": latency_summary_ms(quiet),
        "with": latency_summary_ms(loaded),
        "p99_ratio": latency_summary_ms(loaded)["p99_ms"] / latency_summary_ms(quiet)["p99_ms"],
        "sigterm_to_exit_s": stopping.seconds,
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
