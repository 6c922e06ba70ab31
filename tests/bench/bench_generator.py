"""``make bench-generator``: the generator's burst rate into pulsar-lite on this machine.

Starts its own PostgreSQL and pulsar-lite, then measures, in the same run:
  * baseline: raw pulsar-client ``send_async`` of pre-serialised payloads (no generation),
    which bounds what any Python producer can reach on this machine;
  * the generator in one process and in two processes (tenants split between them).
Prints a Markdown table for docs/performance.md, then a JSON summary.
"""

from __future__ import annotations

import os
import platform as host
import random
import time
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson

from generator.catalog import demo_tenant_ids, merchant_profile
from generator.messages import FaultShares, message_stream
from generator.sessions import SessionFactory
from include.pulsar_client import pulsar_client
from include.settings import Settings
from include.tenants import topic_for
from tests.services import embedded_platform, run_generator

COUNT = int(os.environ.get("BENCH_COUNT", "400000"))
TENANTS = 4
TARGET_EVENTS_PER_S = 100_000.0  # burst rate into Pulsar (issue #2)


def _raw_baseline(url: str, template: str) -> tuple[float, int]:
    rng = random.Random(1)
    merchants = [merchant_profile(t) for t in demo_tenant_ids(TENANTS)]
    stream = message_stream(
        merchants, rng, SessionFactory(rng), FaultShares(), lambda: datetime.now(UTC)
    )
    messages = list(islice(stream, COUNT))
    client = pulsar_client(url)
    producers = {
        m.tenant_id: client.create_producer(
            topic_for(m.tenant_id, template).replace(".events", ".baseline"),
            batching_enabled=True,
            batching_max_messages=1_000,
            batching_max_publish_delay_ms=5,
            max_pending_messages=20_000,
            block_if_queue_full=True,
        )
        for m in merchants
    }
    started = time.perf_counter()
    for message in messages:
        producers[message.tenant_id].send_async(message.payload, None, partition_key=message.key)
    for producer in producers.values():
        producer.flush()
    elapsed = time.perf_counter() - started
    client.close()
    size = sum(len(m.payload) for m in messages) // len(messages)
    return COUNT / elapsed, size


def _generator(settings: Settings, processes: int, run: int) -> dict[str, Any]:
    tenants = ",".join(f"bench{run}_{t}" for t in demo_tenant_ids(TENANTS))
    return run_generator(
        settings,
        "burst",
        "--count",
        str(COUNT),
        "--seed",
        "1",
        "--tenants",
        tenants,
        "--processes",
        str(processes),
    )


def main() -> None:
    """Run the benchmark and print the table."""
    with embedded_platform() as settings:
        baseline, size = _raw_baseline(settings.pulsar_url, settings.topic_template)
        one = _generator(settings, 1, 1)
        two = _generator(settings, 2, 2)
    print(
        f"\nGenerator burst into pulsar-lite: {COUNT:,} events, {TENANTS} tenants, "
        f"{os.cpu_count()} cores, {host.processor() or host.machine()}, "
        f"average event {size} bytes\n"
    )
    print("| run | events/s | vs. raw send |")
    print("| --- | ---: | ---: |")
    print(f"| raw pulsar-client send of pre-built payloads (baseline) | {baseline:,.0f} | 1.00 |")
    for name, summary in [("generator, 1 process", one), ("generator, 2 processes", two)]:
        rate = float(summary["events_per_second"])
        assert summary["failed"] == 0 and summary["sent"] == COUNT, summary
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f} |")
    best = max(float(one["events_per_second"]), float(two["events_per_second"]))
    result = {
        "events": COUNT,
        "tenants": TENANTS,
        "average_payload_bytes": size,
        "baseline_raw_send_per_s": baseline,
        "one_process_per_s": float(one["events_per_second"]),
        "two_processes_per_s": float(two["events_per_second"]),
        "targets": {"events_per_s": TARGET_EVENTS_PER_S},
        "met": {"events_per_s": best >= TARGET_EVENTS_PER_S},
    }
    print("\n" + orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
