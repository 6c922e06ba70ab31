"""The derived Spark schema parses real generator payloads in Spark exactly as Pydantic does."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from generator.catalog import merchant_profile
from generator.messages import FaultShares, message_stream
from generator.sessions import SessionFactory
from include.events import EventV2, parse_event
from include.events.schemas import arrow_schema, spark_schema


def _payloads(n: int) -> list[bytes]:
    rng = random.Random(9)
    merchants = [merchant_profile("spark_shop")]
    stream = message_stream(
        merchants,
        rng,
        SessionFactory(rng, v2_share=0.5),
        FaultShares(),
        lambda: datetime(2026, 5, 1, tzinfo=UTC),  # fixed: nothing here reads the clock
    )
    return [m.payload for m in islice(stream, n)]


def test_spark_parses_payloads_like_pydantic(spark: SparkSession) -> None:
    payloads = _payloads(400)
    frame = spark.createDataFrame([(p.decode(),) for p in payloads], "value string")
    parsed = frame.select(F.from_json("value", spark_schema(EventV2)).alias("e")).select("e.*")
    rows = {r["event_id"]: r for r in parsed.collect()}
    assert len(rows) == len(payloads)
    for payload in payloads:
        model = parse_event(payload)
        row = rows[str(model.event_id)]
        assert row["schema_version"] == model.schema_version
        assert row["event_time"].replace(tzinfo=UTC) == model.event_time
        assert row["customer"]["customer_id"] == model.customer.customer_id
        assert [(i["sku"], i["quantity"], i["unit_price"]) for i in row["items"]] == [
            (i.sku, i.quantity, i.unit_price) for i in model.items
        ]
        if model.order is not None:
            assert row["order"]["total_amount"] == model.order.total_amount
        assert model.ml_context is not None
        assert row["ml_context"]["model_scores"] == model.ml_context.model_scores
        marketing = getattr(model, "marketing", None)
        assert (row["marketing"] is None) == (marketing is None)


def test_arrow_schema_holds_pydantic_dumps() -> None:
    models = [parse_event(p) for p in _payloads(200)]
    rows = [m.model_dump(mode="python") for m in models]
    for row in rows:
        row["event_id"] = str(row["event_id"])
        row.setdefault("marketing", None)
    table = pa.Table.from_pylist(rows, schema=arrow_schema(EventV2))
    assert table.num_rows == 200
    assert table.column("event_id").to_pylist() == [str(m.event_id) for m in models]


def test_validation_in_spark_matches_the_contract(spark: SparkSession) -> None:
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.testing import assertDataFrameEqual

    from jobs.stream.partition_read import ARROW_SCHEMA
    from jobs.stream.validate import OUTPUT_SCHEMA, validate_batch

    now = datetime(2026, 5, 1, tzinfo=UTC)  # publish and ingest time: validation reads no clock
    template = "persistent://public/default/{tenant_id}.events"
    payloads = [*_payloads(60), b"{broken"]
    raw = pa.Table.from_pydict(
        {
            "topic": [template.format(tenant_id="spark_shop")] * len(payloads),
            "message_id": [f"1:{i}:-1" for i in range(len(payloads))],
            "publish_time": [now] * len(payloads),
            "key": [None] * len(payloads),
            "properties": [[] for _ in payloads],
            "value": payloads,
        },
        schema=ARROW_SCHEMA,
    )
    currency = merchant_profile("spark_shop").currency

    def validate(batches):  # type: ignore[no-untyped-def]
        for batch in batches:
            yield validate_batch(batch, {"spark_shop": currency}, template, 262_144, now)

    actual = (
        spark.createDataFrame(raw)
        .mapInArrow(validate, from_arrow_schema(OUTPUT_SCHEMA))
        .select("status", "reason", "event_id", "event_type", "order_total_amount")
    )
    rows: list[tuple[Any, ...]] = []
    for payload in payloads[:-1]:
        event = parse_event(payload)
        total = event.order.total_amount if event.order else None
        rows.append(("valid", None, str(event.event_id), event.event_type.value, total))
    rows.append(("quarantined", "invalid_json", None, None, None))
    expected = spark.createDataFrame(
        rows,
        "status string, reason string, event_id string, event_type string, "
        "order_total_amount decimal(18,2)",
    )
    assertDataFrameEqual(actual, expected)
