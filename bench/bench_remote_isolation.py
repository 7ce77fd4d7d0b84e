"""Feedback latency while URI registrations hang on dead remotes (BENCHMARKS.md section 13).

Starts a real ``flywheel serve`` whose source roots point at a black-hole endpoint (accepts,
never answers) and a refusing one, then measures feedback latency (sequential requests,
one client) twice in the same run: with no registrations, and with 50 registrations in
flight against those endpoints. Also times SIGTERM to exit with the registrations stuck.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_remote_isolation.py --requests 400
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.api.conftest import free_port  # noqa: E402
from tests.endpoints import S3_ENV, black_hole, refusing_port, wait_until_healthy  # noqa: E402
from tests.test_serve_remote_isolation import _pending, _prepare, _root  # noqa: E402


def _latencies(base: str, key: str, ids: list[str], n: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    out = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for i in range(n):
            body = {"prediction_id": ids[i % len(ids)], "kind": "confirm", "user_id": f"b{i}"}
            start = time.perf_counter()
            r = client.post("/v1/feedback", json=body)
            out.append(time.perf_counter() - start)
            assert r.status_code == 201, r.text
    return out


def _summary(lat: list[float]) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100)
    return {"p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "max_ms": 1000 * max(lat)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--registrations", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/remote_isolation.json")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp()) / "data"
    app_key, engineer_key, ids = _prepare(data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with black_hole() as hole:
        env = {
            **os.environ,
            **S3_ENV,
            "FLYWHEEL_INGEST__URI_ROOTS": json.dumps(
                [_root("hole", hole.port), _root("refused", refusing_port())]
            ),
            "FLYWHEEL_INGEST__REMOTE_READ_TIMEOUT_S": "120",
            "FLYWHEEL_INGEST__REMOTE_TOTAL_TIMEOUT_S": "300",
            "FLYWHEEL_INGEST__REMOTE_ATTEMPTS": "1",
        }
        cli = [sys.executable, "-m", "flywheel.cli", "--data-dir", str(data)]
        proc = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            wait_until_healthy(base, proc)
            _latencies(base, app_key, ids, 50)  # warm-up
            quiet = _latencies(base, app_key, ids, args.requests)

            def register(i: int) -> None:
                bucket = "hole" if i % 2 == 0 else "refused"
                body = {"items": [{"uri": f"s3://{bucket}/imgs/{i}.png"}]}
                headers = {"Authorization": f"Bearer {engineer_key}"}
                with contextlib.suppress(httpx.TransportError):
                    httpx.post(f"{base}/v1/samples/uris", json=body, headers=headers, timeout=600)

            pool = ThreadPoolExecutor(args.registrations)
            futures = [pool.submit(register, i) for i in range(args.registrations)]
            while _pending(base) + sum(f.done() for f in futures) < args.registrations:
                time.sleep(0.2)
            in_flight = args.registrations - sum(f.done() for f in futures)
            loaded = _latencies(base, app_key, ids, args.requests)
        finally:
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            stop_s = time.monotonic() - start
            pool.shutdown(wait=True)
    result = {
        "requests": args.requests,
        "registrations_in_flight": in_flight,
        "without": _summary(quiet),
        "with": _summary(loaded),
        "p99_ratio": _summary(loaded)["p99_ms"] / _summary(quiet)["p99_ms"],
        "sigterm_to_exit_s": stop_s,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
