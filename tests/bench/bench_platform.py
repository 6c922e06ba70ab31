"""``make bench-platform``: the whole platform, as ``make run`` starts it, under a burst and a
steady rate; what an API client sees in ``/metrics``.

Starts every program ``make run`` starts (PostgreSQL, pulsar-lite, the streaming job, the API,
the demo generator at its 50 events/s, Airflow with ``load_postgres`` on its one-minute
schedule) on free ports in a temporary state directory, and waits for the stream's first
micro-batch. Then, each to a tenant registered for it through the API:

1. **Burst** (``BENCH_PLATFORM_EVENTS``, default 300,000, ``BENCH_PLATFORM_REPEATS`` times):
   pre-built payloads (valid events, built before the clock starts) are published by a plain
   ``pulsar-client`` producer that blocks when its queue is full and checks every send result,
   so the producer is never the bound; reported: events/s from the first send to the moment
   ``/metrics`` (tenant token) totals every event exactly.
2. **Steady rate** (``BENCH_PLATFORM_RATE`` events/s, default 10,000, for
   ``BENCH_PLATFORM_SECONDS``, default 300): the k-th event's latency is the time ``/metrics``
   first counted k events minus the time the k-th send was confirmed (each topic is read in
   order); reported: p50/p95/max, and the lag's slope (published minus visible) over the second
   half of the publishing.

Every figure is printed next to its target (issue #14), with the machine's load average at the
start and end; a JSON summary follows on stdout, progress on stderr.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import httpx
import orjson
import pulsar

from generator.catalog import merchant_profile
from generator.messages import FaultShares, OutgoingMessage, message_stream
from generator.sessions import SessionFactory
from include.embedded import supervisor
from include.pulsar_client import pulsar_client
from include.settings import Settings
from include.tenants import topic_for
from tests.bench.soak import register_tenants, slope, wait_stream_ready
from tests.services import embedded_platform

EVENTS = int(os.environ.get("BENCH_PLATFORM_EVENTS", "300000"))
REPEATS = int(os.environ.get("BENCH_PLATFORM_REPEATS", "1"))
RATE = float(os.environ.get("BENCH_PLATFORM_RATE", "10000"))
SECONDS = float(os.environ.get("BENCH_PLATFORM_SECONDS", "300"))
TIMEOUT_S = float(os.environ.get("BENCH_PLATFORM_TIMEOUT", "900"))
# Issue #14's targets.
TARGET_BURST_EVENTS_PER_S = 10_000.0
TARGET_P95_VISIBLE_S = 5.0
POLL_S = 0.25


def _log(message: str) -> None:
    print(f"[bench-platform {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_messages(tenant: str, count: int, seed: int, start: datetime) -> list[OutgoingMessage]:
    """``count`` valid events of ``tenant`` (no faults), sessions ending 50 ms apart."""
    rng = random.Random(seed)
    clock_state = [start]

    def clock() -> datetime:
        clock_state[0] += timedelta(milliseconds=50)
        return clock_state[0]

    stream = message_stream(
        [merchant_profile(tenant)], rng, SessionFactory(rng, v2_share=0.3), FaultShares(), clock
    )
    return list(islice(stream, count))


@dataclass
class Sent:
    """Confirmed sends over time: ``(monotonic seconds, confirmed so far)``."""

    timeline: list[tuple[float, int]] = field(default_factory=list)
    confirmed: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def callback(self, result: pulsar.Result, _msg_id: Any) -> None:
        with self.lock:
            if result == pulsar.Result.Ok:
                self.confirmed += 1
                if self.confirmed % 500 == 0:
                    self.timeline.append((time.monotonic(), self.confirmed))
            else:
                self.failed += 1


def publish(
    settings: Settings, tenant: str, messages: list[OutgoingMessage], rate: float | None
) -> Sent:
    """Send every message with a blocking, batching producer (paced at ``rate`` if given); fail
    unless every send was confirmed."""
    client = pulsar_client(settings.pulsar_url, settings.pulsar_token)
    sent = Sent()
    try:
        producer = client.create_producer(
            topic_for(tenant, settings.topic_template),
            batching_enabled=True,
            batching_max_messages=1_000,
            batching_max_publish_delay_ms=5,
            max_pending_messages=20_000,
            block_if_queue_full=True,
        )
        started = time.monotonic()
        for index, message in enumerate(messages):
            if rate is not None and index % 100 == 0:
                ahead = started + index / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            producer.send_async(message.payload, sent.callback, partition_key=message.key)
        producer.flush()
        producer.close()
    finally:
        client.close()
    with sent.lock:
        sent.timeline.append((time.monotonic(), sent.confirmed))
    if sent.failed or sent.confirmed != len(messages):
        raise RuntimeError(
            f"{sent.failed} sends failed, {sent.confirmed} of {len(messages)} confirmed"
        )
    return sent


def metrics_events(api: httpx.Client, token: str, window: dict[str, str]) -> int:
    """``/metrics`` total events over ``window`` for the token's tenant."""
    response = api.get(
        "/metrics",
        params={**window, "granularity": "day"},
        headers={"Authorization": f"Bearer {token}"},
    )
    response.raise_for_status()
    return int(response.json()["totals"]["events"])


class Watcher:
    """Polls ``/metrics`` in a thread, from now until it counts ``target`` events (or the
    timeout); ``join()`` returns the visible counts over time."""

    def __init__(
        self, api: httpx.Client, token: str, window: dict[str, str], target: int, timeout_s: float
    ) -> None:
        self.seen: list[tuple[float, int]] = []
        self._thread = threading.Thread(
            target=self._poll, args=(api, token, window, target, timeout_s), daemon=True
        )
        self._thread.start()

    def _poll(
        self, api: httpx.Client, token: str, window: dict[str, str], target: int, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            count = metrics_events(api, token, window)
            self.seen.append((time.monotonic(), count))
            if count >= target:
                return
            time.sleep(POLL_S)

    def join(self) -> list[tuple[float, int]]:
        self._thread.join()
        return self.seen


def first_time(timeline: list[tuple[float, int]], count: int) -> float | None:
    """When ``timeline`` first reached ``count``."""
    for moment, reached in timeline:
        if reached >= count:
            return moment
    return None


def latencies(
    sent: list[tuple[float, int]], seen: list[tuple[float, int]], total: int
) -> list[float]:
    """Latency of every 500th event: first visible minus confirmed."""
    out = []
    for k in range(500, total + 1, 500):
        confirmed, visible = first_time(sent, k), first_time(seen, k)
        if confirmed is not None and visible is not None:
            out.append(max(0.0, visible - confirmed))
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def _window(start: datetime) -> dict[str, str]:
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return {
        "start": (day - timedelta(days=1)).strftime(fmt),
        "end": (day + timedelta(days=2)).strftime(fmt),
    }


def burst(
    settings: Settings, api: httpx.Client, tenant: str, token: str, seed: int
) -> dict[str, Any]:
    """One burst to a new tenant: publish start to exact totals in ``/metrics``."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    messages = build_messages(tenant, EVENTS, seed, start)
    expected = len({m.event_id for m in messages})
    watcher = Watcher(api, token, _window(start), expected, TIMEOUT_S)
    t0 = time.monotonic()
    sent = publish(settings, tenant, messages, rate=None)
    published_s = time.monotonic() - t0
    seen = watcher.join()
    done = first_time(seen, expected)
    final = seen[-1][1] if seen else 0
    return {
        "events": expected,
        "publish_events_per_s": len(messages) / published_s,
        "visible": final,
        "exact": final == expected,
        "seconds": None if done is None else done - t0,
        "events_per_s": None if done is None else expected / (done - t0),
        "sends_confirmed": sent.confirmed,
    }


def steady(settings: Settings, api: httpx.Client, tenant: str, token: str) -> dict[str, Any]:
    """A steady rate to a new tenant: latency to ``/metrics`` and the lag's slope."""
    count = int(RATE * SECONDS)
    start = datetime.now(UTC).replace(microsecond=0)
    messages = build_messages(tenant, count, 99, start - timedelta(hours=1))
    expected = len({m.event_id for m in messages})
    watcher = Watcher(api, token, _window(start), expected, SECONDS + TIMEOUT_S)
    t0 = time.monotonic()
    sent = publish(settings, tenant, messages, rate=RATE)
    t_end = time.monotonic()
    seen = watcher.join()
    values = latencies(sent.timeline, seen, expected)
    half = t0 + (t_end - t0) / 2
    lag_points = [
        (moment - t0, (first_reached(sent.timeline, moment) - visible))
        for moment, visible in seen
        if half <= moment <= t_end
    ]
    lag_slope = (
        slope([p[0] for p in lag_points], [p[1] for p in lag_points])
        if len(lag_points) > 2
        else None
    )
    return {
        "rate": RATE,
        "seconds": SECONDS,
        "events": expected,
        "achieved_rate": count / (t_end - t0),
        "exact": bool(seen) and seen[-1][1] == expected,
        "p50_s": statistics.median(values) if values else None,
        "p95_s": percentile(values, 0.95) if values else None,
        "max_s": max(values) if values else None,
        "lag_slope_events_per_s": lag_slope,
        "lag_bounded": lag_slope is not None and lag_slope <= 0.01 * RATE,
    }


def first_reached(timeline: list[tuple[float, int]], moment: float) -> int:
    """How many sends were confirmed by ``moment``."""
    reached = 0
    for at, count in timeline:
        if at > moment:
            break
        reached = count
    return reached


def run() -> dict[str, Any]:
    """The benchmark; returns its summary."""
    load_start = os.getloadavg()
    tenants = [f"bench_burst_{n}" for n in range(REPEATS)] + ["bench_steady"]
    # As `make run`: every program, the demo generator at 50 events/s, loads every minute.
    with embedded_platform(
        apps=supervisor.APPS, generator_rate=50.0, load_schedule="* * * * *"
    ) as settings:
        base = f"http://{settings.api_host}:{settings.api_port}"
        tokens = register_tenants(base, settings.admin_token.get_secret_value(), tenants)
        wait_stream_ready(settings, timeout_s=600)
        _log("platform up, the stream committed its first batch")
        with httpx.Client(base_url=base, timeout=30) as api:
            bursts = []
            for n in range(REPEATS):
                tenant = f"bench_burst_{n}"
                _log(f"burst {n + 1}/{REPEATS}: {EVENTS:,} events to {tenant}")
                bursts.append(burst(settings, api, tenant, tokens[tenant], seed=10 + n))
                _log(f"burst {n + 1}: {bursts[-1]}")
            _log(f"steady: {RATE:,.0f} events/s for {SECONDS:.0f} s")
            rate = steady(settings, api, "bench_steady", tokens["bench_steady"])
            _log(f"steady: {rate}")
    rates = [b["events_per_s"] for b in bursts if b["events_per_s"] is not None]
    return {
        "started_at": datetime.now(UTC).isoformat(),
        "cores": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "bursts": bursts,
        "burst_events_per_s_min": min(rates) if len(rates) == REPEATS else None,
        "burst_events_per_s_median": statistics.median(rates) if len(rates) == REPEATS else None,
        "steady": rate,
    }


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "not reached" if value is None else f"{value:,.{digits}f}{unit}"


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def main() -> None:
    summary = run()
    burst_median = summary["burst_events_per_s_median"]
    p95 = summary["steady"]["p95_s"]
    print("| figure | measured | target | met |")
    print("| --- | --- | --- | --- |")
    print(
        f"| burst of {EVENTS:,} to a new tenant, publish start → exact `/metrics` (median of "
        f"{REPEATS}; min {_fmt(summary['burst_events_per_s_min'], ' /s')}) | "
        f"{_fmt(burst_median, ' events/s')} | ≥ {TARGET_BURST_EVENTS_PER_S:,.0f} events/s | "
        f"{_met(burst_median is not None and burst_median >= TARGET_BURST_EVENTS_PER_S)} |"
    )
    print(
        f"| p95 publish → visible in `/metrics` at {RATE:,.0f} events/s for {SECONDS:.0f} s | "
        f"{_fmt(p95, ' s', 2)} | ≤ {TARGET_P95_VISIBLE_S:.0f} s | "
        f"{_met(p95 is not None and p95 <= TARGET_P95_VISIBLE_S)} |"
    )
    print(
        "| lag bounded over the second half (slope) | "
        f"{_fmt(summary['steady']['lag_slope_events_per_s'], ' events/s', 1)} | "
        f"≤ 1 % of the rate | {_met(summary['steady']['lag_bounded'])} |"
    )
    print(
        f"\nload average: start {summary['load_average_start']}, end {summary['load_average_end']}"
    )
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
