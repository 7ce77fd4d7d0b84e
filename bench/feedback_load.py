"""The load bench_feedback.py sends: closed-loop keep-alive clients posting feedback with a
fresh Idempotency-Key each, as soon as the previous answer arrives. The default client is
raw HTTP/1.1 over asyncio streams (~50 us of CPU a request); httpx's AsyncClient (~320
req/s at 100 % of a core here) would be the bottleneck. CPU of the server, this process,
PostgreSQL and the box is sampled at both ends of the measured window."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness.resources import box_cpu, postgres_cpu, tree_cpu


def bodies(prediction_ids: list[str]) -> list[bytes]:
    """A mix of the three kinds, as an app would send them."""
    out = []
    for i, pid in enumerate(prediction_ids):
        body: dict[str, Any] = {"prediction_id": pid, "user_id": f"user-{i % 97}"}
        match i % 3:
            case 0:
                body["kind"] = "confirm"
            case 1:
                body["kind"] = "reject"
            case _:
                body |= {"kind": "correct", "label": str(i % 10)}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.lower().find(b"content-length:")
    if at < 0:
        raise RuntimeError("the server sent no Content-Length")
    n = int(head[at + 15 : head.index(b"\r\n", at)])
    return status, (await reader.readexactly(n) if n else b"")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's event loop where installed (the generator's CPU per request is lower)."""
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return asyncio.new_event_loop


class Load:
    """``clients`` closed-loop clients against one server; what the window saw."""

    def __init__(
        self, port: int, token: str, payloads: list[bytes], clients: int, stats_path: str | None
    ) -> None:
        self.port = port
        self.token = token
        self.payloads = payloads
        self.clients = clients
        self.stats_path = stats_path
        self.prefix = uuid.uuid4().hex[:12]
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.latencies: list[float] = []
        self.slow: list[tuple[float, float]] = []  # (epoch start, seconds) of answers > 50 ms

    def request(self, c: int, i: int) -> bytes:
        body = self.payloads[(c * 7919 + i) % len(self.payloads)]
        return (
            f"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {self.prefix}-{c}-{i}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def raw_client(self, c: int, start: float, end: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        i = 0
        try:
            while (t0 := time.perf_counter()) < end:
                writer.write(self.request(c, i))
                i += 1
                try:
                    status, _ = await read_response(reader)
                except (ConnectionError, asyncio.IncompleteReadError):
                    self.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    continue
                t1 = time.perf_counter()
                self.statuses[status] += 1
                if t0 >= start:
                    self.latencies.append(t1 - t0)
                    if t1 - t0 > 0.05:
                        self.slow.append((time.time() - (t1 - t0), t1 - t0))
        finally:
            writer.close()

    async def httpx_clients(self, start: float, end: float) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers=headers, limits=limits, timeout=30
        ) as hc:

            async def one(c: int) -> None:
                i = 0
                while (t0 := time.perf_counter()) < end:
                    body = self.payloads[(c * 7919 + i) % len(self.payloads)]
                    key = f"{self.prefix}-{c}-{i}"
                    i += 1
                    try:
                        r = await hc.post(
                            "/v1/feedback", content=body, headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        self.errors += 1
                        continue
                    t1 = time.perf_counter()
                    self.statuses[r.status_code] += 1
                    if t0 >= start:
                        self.latencies.append(t1 - t0)

            await asyncio.gather(*(one(c) for c in range(self.clients)))

    async def server_stats(self) -> dict[str, Any] | None:
        """The Flywheel server's own statistics (``/_bench/stats``), where it has them."""
        if not self.stats_path:
            return None
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = f"GET {self.stats_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        _, body = await read_response(reader)
        writer.close()
        return json.loads(body)

    async def run(
        self, server_pid: int, warmup: float, seconds: float, generator: str
    ) -> dict[str, tuple]:
        """``warmup`` + ``seconds`` of load; the samples taken at the start and the end of
        the measured window: (server tree CPU, generator CPU, box CPU, PostgreSQL CPU,
        server stats, perf_counter, epoch)."""
        t = time.perf_counter()
        start, end = t + warmup, t + warmup + seconds
        samples: dict[str, tuple] = {}

        async def sample(at: float, name: str) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            samples[name] = (
                tree_cpu(server_pid),
                time.process_time(),
                box_cpu(),
                postgres_cpu(),
                await self.server_stats(),
                time.perf_counter(),
                time.time(),
            )

        if generator == "raw":
            load = [self.raw_client(c, start, end) for c in range(self.clients)]
        else:
            load = [self.httpx_clients(start, end)]
        await asyncio.gather(*load, sample(start, "start"), sample(end, "end"))
        return samples
