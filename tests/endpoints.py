"""Loopback endpoints for tests of remote reads and of served processes: a real
S3-compatible server (moto), a listener that records who connected, a black hole (accepts,
never answers), a port that refuses connections, and a wait for a server's health."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.api.conftest import free_port

# The credentials the test S3 server takes (it checks none); the server under test reads
# them from the environment, as a deployment would.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "flywheel-test",
    "AWS_SECRET_ACCESS_KEY": "flywheel-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port

    def root(self, bucket: str, prefix: str) -> str:
        """An ``ingest.uri_roots`` entry for ``bucket/prefix`` on this server."""
        return (
            f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"
        )

    def put(self, bucket: str, key: str, data: bytes) -> None:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key=S3_ENV["AWS_ACCESS_KEY_ID"],
            secret_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=self.endpoint,
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            fs.create_dir(bucket)
        with fs.open_output_stream(f"{bucket}/{key}") as f:
            f.write(data)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, for the length of the block."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        server.stop()


@dataclass
class Listener:
    """A loopback TCP port that accepts connections and, as a black hole, never answers."""

    port: int
    connections: int = 0
    _sockets: list[socket.socket] = field(default_factory=list)


@contextmanager
def black_hole() -> Iterator[Listener]:
    """Accepts every connection, reads and discards, never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener = Listener(server.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            listener.connections += 1
            listener._sockets.append(conn)  # kept open: the peer waits for an answer

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(5)
        for conn in listener._sockets:
            conn.close()
        server.close()


def refusing_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    return free_port()


def wait_until_healthy(base: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Poll ``base``/healthz until the server ``proc`` answers (fails if it exits first)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("the server did not start")
        time.sleep(0.2)
