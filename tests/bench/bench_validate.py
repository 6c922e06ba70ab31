"""``make bench-validate``: µs per event of ``validate_batch`` on one core, Pydantic-only path
(``tests.validate_reference``) against the msgspec fast path, on the same generated events.

No services. Pins itself to one CPU, builds ``BENCH_VALIDATE_EVENTS`` (20,000) generator
events of four tenants (30 % schema version 2) in source batches of 10,000, checks once that
both paths give equal batches, then times each path ``BENCH_VALIDATE_REPEATS`` times,
alternating, and prints min and median with the load average. About 15 s on an idle core.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from generator.catalog import demo_tenant_ids, merchant_profile
from generator.sessions import SessionFactory
from jobs.stream.partition_read import ARROW_SCHEMA
from jobs.stream.validate import validate_batch
from tests.validate_reference import validate_batch_pydantic

EVENTS = int(os.environ.get("BENCH_VALIDATE_EVENTS", "20000"))
REPEATS = int(os.environ.get("BENCH_VALIDATE_REPEATS", "5"))
BATCH_ROWS = 10_000  # the Pulsar source's Arrow batch size
TEMPLATE = "persistent://public/default/{tenant_id}.events"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

Validate = Callable[[pa.RecordBatch, dict[str, str], str, int, datetime], pa.RecordBatch]


def _batches() -> tuple[list[pa.RecordBatch], dict[str, str]]:
    merchants = [merchant_profile(t) for t in demo_tenant_ids(4)]
    factory = SessionFactory(random.Random(20261125))
    topics: list[str] = []
    values: list[bytes] = []
    while len(values) < EVENTS:
        merchant = merchants[len(values) % len(merchants)]
        for event in factory.session(merchant, NOW):
            topics.append(TEMPLATE.format(tenant_id=merchant.tenant_id))
            values.append(orjson.dumps(event))
    batches = []
    for start in range(0, EVENTS, BATCH_ROWS):
        n = min(BATCH_ROWS, EVENTS - start)
        batches.append(
            pa.RecordBatch.from_pydict(
                {
                    "topic": topics[start : start + n],
                    "message_id": [f"1:{i}:-1" for i in range(start, start + n)],
                    "publish_time": [NOW + timedelta(milliseconds=i) for i in range(n)],
                    "key": [None] * n,
                    "properties": [[] for _ in range(n)],
                    "value": values[start : start + n],
                },
                schema=ARROW_SCHEMA,
            )
        )
    return batches, {m.tenant_id: m.currency for m in merchants}


def _run(validate: Validate, batches: list[pa.RecordBatch], currencies: dict[str, str]) -> float:
    """µs per event of one pass over ``batches``."""
    start = time.perf_counter()
    for batch in batches:
        validate(batch, currencies, TEMPLATE, 262_144, NOW)
    return (time.perf_counter() - start) / EVENTS * 1e6


def main() -> None:
    """Time both paths and print the table."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    batches, currencies = _batches()
    for batch in batches:
        old = validate_batch_pydantic(batch, currencies, TEMPLATE, 262_144, NOW)
        new = validate_batch(batch, currencies, TEMPLATE, 262_144, NOW)
        if not new.equals(old):
            raise SystemExit("the two paths disagree on the generated events")
        if set(new.column("status").to_pylist()) != {"valid"}:
            raise SystemExit("generated events were quarantined: the benchmark is off")
    paths: dict[str, Validate] = {
        "Pydantic only (before)": validate_batch_pydantic,
        "msgspec fast path (validate_batch)": validate_batch,
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(REPEATS):
        for name, validate in paths.items():
            times[name].append(_run(validate, batches, currencies))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{EVENTS:,} generated events, CPU {cpu} only, {REPEATS} runs; load average {load}")
    print("| path | min µs/event | median µs/event |")
    print("| --- | ---: | ---: |")
    for name, runs in times.items():
        print(f"| {name} | {min(runs):.1f} | {statistics.median(runs):.1f} |")


if __name__ == "__main__":
    main()
