"""The micro-batch's row loops as they were before the columnar rewrite (commit f633035,
``jobs/stream/sink.py`` and ``jobs/stream/job.py``): the pre-columnar implementation, kept as
the oracle of ``tests/unit/test_shaping.py`` and the baseline of
``tests.bench.bench_batch_steps``.

The bodies are copied unchanged; only what was inline in a bigger function (the silver choice
in ``plan_batch``, the silver mask in ``batch_files``) is lifted into a function of its own,
and ``record`` reads ``metrics``, ``log`` and the clock from this module so a test can swap
them.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.stream import metrics
from jobs.stream.shaping import SUMMARY_SCHEMA
from jobs.stream.validate import QUARANTINED

log = logging.getLogger("jobs.stream")
_SUMMARY_COLUMNS = SUMMARY_SCHEMA.names[:-1]


def summarize(rows: pa.RecordBatch) -> pa.RecordBatch:
    """The ``SUMMARY_SCHEMA`` columns of validated rows (on an executor, or on the driver)."""
    quantities = [
        sum(line["quantity"] for line in lines or []) for lines in rows.column("items").to_pylist()
    ]
    columns = [rows.column(n) for n in _SUMMARY_COLUMNS]
    return pa.RecordBatch.from_arrays(
        [*columns, pa.array(quantities, type=pa.int64())], schema=SUMMARY_SCHEMA
    )


def first_occurrences(tenants: list[str], events: list[str]) -> list[int]:
    """Indexes of the first row of each (tenant_id, event_id) in batch order."""
    seen: set[tuple[str, str]] = set()
    keep = []
    for i, key in enumerate(zip(tenants, events, strict=True)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def end_offsets(table: pa.Table, previous: dict[str, list[int]]) -> dict[str, list[int]]:
    """Cumulative per-topic position of the last entry read, after this batch."""
    offsets = dict(previous)
    for topic, message_id in zip(
        table.column("topic").to_pylist(), table.column("message_id").to_pylist(), strict=True
    ):
        ledger, entry, _batch = (int(p) for p in message_id.split(":"))
        position = [ledger, entry, -1]
        if topic not in offsets or position > offsets[topic]:
            offsets[topic] = position
    return offsets


def metric_rows(valid: pa.Table) -> list[tuple[Any, ...]]:
    """``_metric_rows``: the tuples ``_write_postgres`` gave ``copy.write_row`` one by one."""
    tenants = valid.column("tenant_id").to_pylist()
    events = valid.column("event_id").to_pylist()
    types = valid.column("event_type").to_pylist()
    minutes = pc.floor_temporal(valid.column("event_time"), unit="minute").to_pylist()
    amounts = valid.column("order_total_amount").to_pylist()
    items = valid.column("item_quantity").to_pylist()
    return list(zip(tenants, events, types, minutes, amounts, items, strict=True))


def plan_valid(summary: pa.Table) -> pa.Table:
    """``plan_batch``'s distinct valid rows (before its PostgreSQL step)."""
    valid_all = summary.filter(pc.equal(summary.column("status"), "valid"))
    keep = first_occurrences(
        valid_all.column("tenant_id").to_pylist(), valid_all.column("event_id").to_pylist()
    )
    return valid_all.take(pa.array(keep, type=pa.int64()))


def silver_messages(valid: pa.Table, fresh: set[tuple[str, str]]) -> frozenset[tuple[str, str]]:
    """``plan_batch``'s choice of the messages whose rows silver and items get."""
    return frozenset(
        (topic, message_id)
        for tenant, event, topic, message_id in zip(
            valid.column("tenant_id").to_pylist(),
            valid.column("event_id").to_pylist(),
            valid.column("topic").to_pylist(),
            valid.column("message_id").to_pylist(),
            strict=True,
        )
        if (tenant, event) in fresh
    )


def rows_of_messages(valid: pa.Table, silver_messages: frozenset[tuple[str, str]]) -> pa.Table:
    """``batch_files``' silver mask over the valid rows."""
    mask = [
        key in silver_messages
        for key in zip(
            valid.column("topic").to_pylist(),
            valid.column("message_id").to_pylist(),
            strict=True,
        )
    ]
    return valid.filter(pa.array(mask, type=pa.bool_()))


def record(table: pa.Table, result: Any, seconds: float) -> None:
    """``jobs.stream.job._record``."""
    tenants = Counter(table.column("topic_tenant").to_pylist())
    for tenant, count in tenants.items():
        metrics.INPUT_ROWS.labels(tenant or "unknown").inc(count)
    bad = table.filter(pc.equal(table.column("status"), QUARANTINED))
    by_reason = Counter(
        zip(bad.column("topic_tenant").to_pylist(), bad.column("reason").to_pylist(), strict=True)
    )
    for (tenant, reason), count in by_reason.items():
        metrics.QUARANTINED.labels(tenant or "unknown", reason).inc(count)
    metrics.NEW_EVENTS.inc(result.new_events)
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.ROWS_PER_SECOND.set(table.num_rows / max(seconds, 1e-6))
    metrics.LAST_BATCH.set(result.batch_id)
    metrics.LAST_BATCH_TIME.set_to_current_time()
    lag: dict[str, float] = {}
    now = datetime.now(UTC)
    for tenant, published in zip(
        table.column("topic_tenant").to_pylist(),
        table.column("publish_time").to_pylist(),
        strict=True,
    ):
        age = (now - published).total_seconds()
        if age > lag.get(tenant or "unknown", -1):
            lag[tenant or "unknown"] = age
    for tenant, seconds_behind in lag.items():
        metrics.LAG_SECONDS.labels(tenant).set(seconds_behind)
    log.info(
        "batch committed",
        extra={
            "batch_id": result.batch_id,
            "input_rows": result.input_rows,
            "valid_rows": result.valid_rows,
            "new_events": result.new_events,
            "quarantined_rows": result.quarantined_rows,
            "quarantined_by_reason": {f"{t}/{r}": c for (t, r), c in by_reason.items()},
            "seconds": round(seconds, 3),
            "rows_per_second": round(table.num_rows / max(seconds, 1e-6)),
            "lag_seconds": {t: round(s, 3) for t, s in lag.items()},
            "replayed": result.skipped_postgres,
            "skipped_tables": list(result.skipped_tables),
        },
    )
