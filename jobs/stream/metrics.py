"""Prometheus metrics of the streaming job, served on a loopback port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

INPUT_ROWS = Counter("lakehouse_stream_input_rows_total", "Messages read from Pulsar", ["tenant"])
NEW_EVENTS = Counter("lakehouse_stream_new_events_total", "Distinct events added to silver")
QUARANTINED = Counter(
    "lakehouse_stream_quarantined_rows_total", "Quarantined messages", ["tenant", "reason"]
)
BATCH_SECONDS = Histogram(
    "lakehouse_stream_batch_seconds",
    "Micro-batch write duration",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
ROWS_PER_SECOND = Gauge("lakehouse_stream_rows_per_second", "Rows/s of the last micro-batch")
LAG_SECONDS = Gauge(
    "lakehouse_stream_lag_seconds",
    "Now minus the oldest publish time in the last batch",
    ["tenant"],
)
LAST_BATCH = Gauge("lakehouse_stream_last_batch_id", "Id of the last committed micro-batch")
LAST_BATCH_TIME = Gauge(
    "lakehouse_stream_last_batch_timestamp_seconds",
    "Unix time the last micro-batch committed (the stalled-stream alert compares it with now)",
)


def serve(addr: str) -> None:
    """Serve ``/metrics`` on ``host:port``."""
    host, _, port = addr.rpartition(":")
    start_http_server(int(port), addr=host)
