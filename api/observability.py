"""Request ids, Prometheus metrics per route, one JSON log line per request, body size cap.

A plain ASGI middleware (not ``BaseHTTPMiddleware``) so streaming and errors pass through
unchanged and the route template is known after routing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lakehouse.api.access")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# What the loads committed, as the API's role may read it (one row per analytics table).
LOAD_WATERMARKS_SQL = (
    "SELECT target, delta_version, rows_loaded, extract(epoch FROM updated_at)::float8 "
    "FROM load_watermarks ORDER BY target"
)


@dataclass(frozen=True)
class LoadWatermark:
    """One analytics table's load watermark: how far the load_postgres DAG got."""

    target: str
    delta_version: int
    rows_loaded: int
    updated_at: float  # Unix time of the last committed load that moved the watermark


class LoadMetrics(Collector):
    """The load_postgres DAG's progress, read from ``load_watermarks`` at each scrape.

    The load job is a short-lived Spark application that Prometheus cannot scrape; the row it
    commits with its data is the durable record, so the API exports it."""

    def __init__(self) -> None:
        self._rows: tuple[LoadWatermark, ...] = ()

    def update(self, rows: Iterable[LoadWatermark]) -> None:
        """Replace what the next scrape reports."""
        self._rows = tuple(rows)

    def collect(self) -> Iterator[Metric]:
        """The load series (declared even before the first load)."""
        rows = CounterMetricFamily(
            "lakehouse_load_rows",
            "Rows the loads inserted into each analytics table since it was created.",
            labels=["target"],
        )
        version = GaugeMetricFamily(
            "lakehouse_load_watermark_version",
            "Delta version of the source table the last load committed (moves once per load).",
            labels=["target"],
        )
        last = GaugeMetricFamily(
            "lakehouse_load_last_success_timestamp_seconds",
            "Unix time of the last load that committed new data into each analytics table.",
            labels=["target"],
        )
        for row in self._rows:
            rows.add_metric([row.target], row.rows_loaded)
            version.add_metric([row.target], row.delta_version)
            last.add_metric([row.target], row.updated_at)
        yield from (rows, version, last)


class ApiMetrics:
    """The API's Prometheus series, in their own registry (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lakehouse_api_requests_total",
            "API requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lakehouse_api_request_duration_seconds",
            "API request latency by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loads = LoadMetrics()
        self.registry.register(self.loads)


class RequestObserver:
    """Tags each request with an id, caps its body, and records its outcome."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException passes FastAPI's body parsing unchanged (others become 400).
                    raise HTTPException(
                        413, f"the request body exceeds {self.max_body_bytes} bytes"
                    )
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, capped_receive, observed_send)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(elapsed)
            log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant_id": scope["state"].get("tenant_id"),
                },
            )


def _route_template(scope: Scope) -> str:
    # The template ("/tenants/{tenant_id}/tokens"), never the raw path: label values stay few.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
