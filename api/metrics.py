"""Prometheus metrics: requests and latency per route, feedback, predictions, champion,
and the outbox backlog.

Each app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _Champion(Collector):
    def __init__(self, version: Callable[[], str | None]) -> None:
        self._version = version

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "flywheel_champion_info", "The model version serving predictions", labels=["version"]
        )
        version = self._version()
        if version is not None:
            gauge.add_metric([version], 1.0)
        yield gauge


class Metrics:
    def __init__(self, champion_version: Callable[[], str | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flywheel_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flywheel_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.feedback = Counter(
            "flywheel_feedback",
            "Feedback items by kind and outcome (written, replayed, refused)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.predictions = Counter(
            "flywheel_predictions",
            "Predictions served by model version",
            ["model_version"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "flywheel_outbox_pending",
            "Messages (queued cycles) not yet handed to the broker: grows while it is down",
            registry=self.registry,
        )
        self.remote_reads_pending = Gauge(
            "flywheel_remote_reads_pending",
            "Remote reads for URI registrations queued or running (bounded by ingest.remote_queue)",
            registry=self.registry,
        )
        self.registry.register(_Champion(champion_version))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """Pure ASGI middleware (no per-request task switch, unlike BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # Route templates, not raw paths: ids in paths would explode the label space.
            name = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, name, str(status)).inc()
            self.metrics.latency.labels(method, name).observe(time.perf_counter() - start)
