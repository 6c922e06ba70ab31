"""The Pydantic-only ``validate_batch`` as it was before the msgspec fast path (commit c10a3f4):
the oracle of the differential test and the baseline of ``tests.bench.bench_validate``.

It calls the same, unchanged ``_check``; only the row loop and the Arrow building are kept
here as they were, so a difference in either new part shows up against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from include.tenants import tenant_of_topic
from jobs.stream.validate import COLUMNS, OUTPUT_SCHEMA, QUARANTINED, VALID, _check


def validate_batch_pydantic(
    batch: pa.RecordBatch,
    currencies: dict[str, str],
    topic_template: str,
    max_payload_bytes: int,
    ingest_time: datetime,
) -> pa.RecordBatch:
    """``jobs.stream.validate.validate_batch`` with every message through Pydantic."""
    raw = batch.to_pydict()
    out: dict[str, list[Any]] = {name: [] for name in OUTPUT_SCHEMA.names}
    flat_names = [c.name for c in COLUMNS]
    empty_flat = [None] * len(COLUMNS)
    for i, value in enumerate(raw["value"]):
        topic = raw["topic"][i]
        tenant = tenant_of_topic(topic, topic_template)
        published = raw["publish_time"][i] or ingest_time
        reason, detail, parsed = _check(value, tenant, currencies, max_payload_bytes, published)
        event, flat = parsed if parsed is not None else (None, empty_flat)
        out["status"].append(VALID if reason is None else QUARANTINED)
        out["reason"].append(reason)
        out["detail"].append(detail)
        out["topic"].append(topic)
        out["topic_tenant"].append(tenant)
        out["message_id"].append(raw["message_id"][i])
        out["publish_time"].append(raw["publish_time"][i])
        out["ingest_time"].append(ingest_time)
        out["key"].append(raw["key"][i])
        out["value"].append(value)
        for name, cell in zip(flat_names, flat, strict=True):
            out[name].append(cell)
        out["items"].append(
            None
            if event is None
            else [
                {
                    "line_number": n,
                    "sku": it.sku,
                    "category": it.category,
                    "quantity": it.quantity,
                    "unit_price": it.unit_price,
                }
                for n, it in enumerate(event.items, start=1)
            ]
        )
    return pa.RecordBatch.from_pydict(out, schema=OUTPUT_SCHEMA)
