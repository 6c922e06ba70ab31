"""``make bench-load``: rows/s of the lake-to-PostgreSQL load, against a row-by-row baseline.

Starts its own PostgreSQL, fills the lake's silver and event_items with ``BENCH_EVENTS``
generated events (validated and written by the streaming job's own validation and sink, without
Pulsar: the load is what is measured), then in the same run:

* the load as ``load_postgres`` runs it: ``spark-submit jobs/load/job.py load`` (rows/s over
  the load itself as the job reports it, and over the whole command including JVM start);
* the baseline: the same driver (psycopg) inserting ``BENCH_BASELINE_ROWS`` silver rows into the
  same ``events`` table with one ``INSERT`` per row, in one transaction.

A Markdown table, then a JSON summary, on stdout.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from deltalake import DeltaTable

from generator.catalog import demo_tenant_ids, merchant_profile
from generator.messages import FaultShares, message_stream
from generator.sessions import SessionFactory
from include.db import connect
from include.settings import Settings
from include.tenants import register_tenant, topic_for
from include.warehouse.tables import EVENTS
from jobs.stream.pulsar_source import ARROW_SCHEMA
from jobs.stream.sink import LakeSink
from jobs.stream.validate import validate_batch
from tests.services import embedded_platform, settings_env

EVENTS_COUNT = int(os.environ.get("BENCH_EVENTS", "1000000"))
BASELINE_ROWS = int(os.environ.get("BENCH_BASELINE_ROWS", "20000"))
CHUNK = 50_000
# Issue #4's targets.
TARGET_ROWS_PER_S = 100_000.0
TARGET_SPEEDUP = 10.0  # against the row-by-row baseline
LOAD_JOB = Path(__file__).resolve().parents[2] / "jobs" / "load" / "job.py"


def fill_lake(settings: Settings) -> None:
    """Write ``EVENTS_COUNT`` valid events to silver/event_items through the stream's sink."""
    tenants = demo_tenant_ids(4)
    merchants = [merchant_profile(t) for t in tenants]
    with connect(settings) as conn:
        for merchant in merchants:
            register_tenant(conn, merchant.tenant_id, merchant.display_name, merchant.currency)
        currencies = {m.tenant_id: m.currency for m in merchants}
    rng = random.Random(9)
    clock = [datetime(2026, 11, 1, tzinfo=UTC)]

    def tick() -> datetime:
        clock[0] += timedelta(seconds=2)
        return clock[0]

    stream = message_stream(merchants, rng, SessionFactory(rng), FaultShares(), tick)
    sink = LakeSink(settings.lake_dir, settings.pg_dsn, "bench-load")
    published = datetime.now(UTC)
    done = 0
    for batch_id in range((EVENTS_COUNT + CHUNK - 1) // CHUNK):
        messages = list(islice(stream, min(CHUNK, EVENTS_COUNT - done)))
        raw = pa.RecordBatch.from_pydict(
            {
                "topic": [topic_for(m.tenant_id, settings.topic_template) for m in messages],
                "message_id": [f"0:{done + i}:-1" for i in range(len(messages))],
                "publish_time": [published] * len(messages),
                "key": [m.key for m in messages],
                "properties": [[] for _ in messages],
                "value": [m.payload for m in messages],
            },
            schema=ARROW_SCHEMA,
        )
        table = pa.Table.from_batches(
            [validate_batch(raw, currencies, settings.topic_template, 262_144, published)]
        )
        sink.write_batch(table, batch_id)
        done += len(messages)
        print(f"lake: {done:,} / {EVENTS_COUNT:,} events", file=sys.stderr, flush=True)


def run_load(settings: Settings) -> tuple[list[dict[str, Any]], float]:
    """``spark-submit jobs/load/job.py load``: its per-table summaries and wall seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            "local[2]",
            "--driver-memory",
            settings.spark_driver_memory,
            str(LOAD_JOB),
            "load",
        ],
        env={**settings_env(settings), "PYSPARK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"load failed:\n{result.stderr[-4000:]}")
    for line in (result.stdout + result.stderr).splitlines():
        if '"load timings"' in line:
            print(line, file=sys.stderr)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    summaries = [orjson.loads(line) for line in lines]
    # Log lines are JSON too; the summaries are the lines without a log message.
    return [s for s in summaries if "inserted_rows" in s and "message" not in s], wall


def baseline(settings: Settings) -> float:
    """Rows/s of one INSERT per row into ``events`` (after emptying it)."""
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table()
    sample = silver.slice(0, BASELINE_ROWS)
    columns = [c for c in EVENTS.columns]
    data = {c: sample.column(c).to_pylist() for c in columns}
    scores = EVENTS.json_columns[0]
    data[scores] = [None if m is None else orjson.dumps(dict(m)).decode() for m in data[scores]]
    rows = list(zip(*(data[c] for c in columns), strict=True))
    statement = (
        f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "ON CONFLICT DO NOTHING"
    )
    with connect(settings) as conn:
        conn.execute("TRUNCATE events")
        conn.commit()
        started = time.perf_counter()
        with conn.transaction():
            for row in rows:
                conn.execute(statement, row)
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def main() -> None:
    """Fill the lake, run the load and the baseline, print a Markdown table."""
    with embedded_platform() as settings:
        fill_lake(settings)
        summaries, wall = run_load(settings)
        rows = sum(s["inserted_rows"] for s in summaries)
        load_seconds = sum(s["seconds"] for s in summaries)
        base = baseline(settings)
    by_table = ", ".join(f"{s['table']} {s['inserted_rows']:,}" for s in summaries)
    rate = rows / load_seconds
    print(f"\nLoad benchmark: {EVENTS_COUNT:,} events in silver ({by_table} rows), local[2]\n")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| load_postgres job, rows/s (the load itself) | {rate:,.0f} |")
    print(f"| load_postgres job, rows/s (whole spark-submit, JVM start included) | "
          f"{rows / wall:,.0f} ({wall:.1f} s) |")  # fmt: skip
    print(f"| baseline: row-by-row INSERT, rows/s ({BASELINE_ROWS:,} rows) | {base:,.0f} |")
    print(f"| load / baseline | {rate / base:.1f}x |")
    result = {
        "events": EVENTS_COUNT,
        "tables": summaries,
        "rows": rows,
        "load_seconds": load_seconds,
        "rows_per_s": rate,
        "wall_seconds": wall,
        "rows_per_s_wall": rows / wall,
        "baseline_rows": BASELINE_ROWS,
        "baseline_rows_per_s": base,
        "speedup": rate / base,
        "targets": {"rows_per_s": TARGET_ROWS_PER_S, "speedup": TARGET_SPEEDUP},
        "met": {"rows_per_s": rate >= TARGET_ROWS_PER_S, "speedup": rate / base >= TARGET_SPEEDUP},
    }
    print("\n" + orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
