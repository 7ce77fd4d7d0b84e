"""Loopback network for benchmarks: free ports, waiting until a server answers its health
check, the API's Prometheus metrics, and dead remotes (a black hole that completes every
connection and never answers, a port that refuses) with the S3 settings a server needs to
try them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

# A remote read signs its requests, so the server needs credentials even for a dead
# endpoint; none are checked there. Instance metadata off: no lookup of real ones.
DUMMY_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "flywheel-bench",
    "AWS_SECRET_ACCESS_KEY": "flywheel-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    """A loopback port free now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    base_url: str, proc: subprocess.Popen, timeout: float = 60, path: str = "/healthz"
) -> None:
    """Poll ``base_url + path`` until it answers 200; fails when ``proc`` (the server)
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            if httpx.get(f"{base_url}{path}", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    if proc.poll() is not None:
        raise RuntimeError(f"the server at {base_url} exited with {proc.returncode}")
    raise RuntimeError(f"the server at {base_url} did not start in {timeout:g} s")


def metric(base_url: str, name: str) -> float:
    """The value of an unlabelled metric on the server's ``/metrics`` page."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise KeyError(f"{name} is not among {base_url}/metrics")


@contextmanager
def black_hole(backlog: int = 512) -> Iterator[int]:
    """A loopback port that listens and never accepts: the kernel completes each handshake
    and queues the connection (up to ``backlog``), so a client connects, sends its request
    and waits for an answer that never comes. Yields the port."""
    server = socket.create_server(("127.0.0.1", 0), backlog=backlog)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def refusing_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    return free_port()


def s3_root(bucket: str, prefix: str, endpoint: str) -> str:
    """An ``ingest.uri_roots`` entry for ``s3://bucket/prefix`` served at ``endpoint``
    (host:port, plain http)."""
    return f"s3://{bucket}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"
