"""``make bench-load``: the lake-to-PostgreSQL load as ``load_postgres`` runs it, on the
platform's Spark Connect server, against a row-by-row baseline.

Starts its own PostgreSQL and Spark Connect server (the supervised program of ``make run``),
fills the lake's silver and event_items with ``BENCH_EVENTS`` generated events (validated and
written by the streaming job's own validation and sink, without Pulsar: the load is what is
measured), then in the same run:

* the full load: ``python jobs/load/job.py --remote sc://... load`` in its own process, as the
  DAG's task calls it (rows/s over the load as the job reports it, and over the whole process);
* ``BENCH_INCREMENTS`` incremental loads of ``BENCH_INCREMENT_EVENTS`` new events each: wall
  seconds and CPU seconds of the client process (min and median);
* idle runs (nothing new): wall and CPU seconds of the client process;
* the baseline: the same driver (psycopg) inserting ``BENCH_BASELINE_ROWS`` silver rows into the
  same ``events`` table with one ``INSERT`` per row, in one transaction;
* then, on a new platform started as ``make run`` does, the platform's idle cost: CPU cores of
  all its programs over ``BENCH_IDLE_SECONDS`` (300) at the demo rate (``tests.bench.idle_cost``).

A Markdown table, then a JSON summary, on stdout.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
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
from include.embedded import supervisor
from include.settings import Settings
from include.tenants import register_tenant, topic_for
from include.warehouse.tables import EVENTS
from jobs.stream.partition_read import ARROW_SCHEMA
from jobs.stream.sink import LakeSink
from jobs.stream.validate import validate_batch
from tests.bench.idle_cost import TARGET_CORES, measure_idle_cost
from tests.services import embedded_platform, settings_env

EVENTS_COUNT = int(os.environ.get("BENCH_EVENTS", "1000000"))
INCREMENT_EVENTS = int(os.environ.get("BENCH_INCREMENT_EVENTS", "1000"))
INCREMENTS = int(os.environ.get("BENCH_INCREMENTS", "5"))
IDLE_RUNS = 5
BASELINE_ROWS = int(os.environ.get("BENCH_BASELINE_ROWS", "20000"))
CHUNK = 50_000
# Issue #15's targets.
TARGET_ROWS_PER_S = 100_000.0
TARGET_SPEEDUP = 10.0  # against the row-by-row baseline
TARGET_INCREMENT_SECONDS = 5.0
LOAD_JOB = Path(__file__).resolve().parents[2] / "jobs" / "load" / "job.py"


class Lake:
    """Writes generated valid events to silver/event_items through the stream's sink, batch
    after batch, as the stream would."""

    def __init__(self, settings: Settings) -> None:
        tenants = demo_tenant_ids(4)
        merchants = [merchant_profile(t) for t in tenants]
        with connect(settings) as conn:
            for merchant in merchants:
                register_tenant(conn, merchant.tenant_id, merchant.display_name, merchant.currency)
        self.currencies = {m.tenant_id: m.currency for m in merchants}
        rng = random.Random(9)
        clock = [datetime(2026, 11, 1, tzinfo=UTC)]

        def tick() -> datetime:
            clock[0] += timedelta(seconds=2)
            return clock[0]

        self.stream = message_stream(merchants, rng, SessionFactory(rng), FaultShares(), tick)
        self.sink = LakeSink(settings.lake_dir, settings.pg_dsn, "bench-load")
        self.settings = settings
        self.batch_id = 0
        self.written = 0

    def add(self, count: int) -> None:
        """Write ``count`` more events."""
        done = 0
        while done < count:
            self._batch(min(CHUNK, count - done))
            done += min(CHUNK, count - done)
            if count > CHUNK:
                print(f"lake: {done:,} / {count:,} events", file=sys.stderr, flush=True)

    def _batch(self, size: int) -> None:
        settings, published = self.settings, datetime.now(UTC)
        done = self.written
        messages = list(islice(self.stream, size))
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
            [validate_batch(raw, self.currencies, settings.topic_template, 262_144, published)]
        )
        self.sink.write_batch(table, self.batch_id)
        self.batch_id += 1
        self.written += len(messages)


@dataclass(frozen=True)
class Run:
    """One load process: its per-table summaries, wall seconds and CPU seconds."""

    summaries: list[dict[str, Any]]
    wall: float
    cpu: float

    @property
    def rows(self) -> int:
        return sum(int(s["inserted_rows"]) for s in self.summaries)


def run_load(settings: Settings) -> Run:
    """``python jobs/load/job.py --remote <server> load``, as the DAG's task calls it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(LOAD_JOB), "--remote", settings.spark_connect_url, "load"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"load failed:\n{result.stderr[-4000:]}")
    for line in result.stderr.splitlines():
        if '"load timings"' in line:
            print(line, file=sys.stderr)
    summaries = [orjson.loads(line) for line in result.stdout.splitlines() if line]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(summaries, wall, cpu)


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


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> None:
    """Fill the lake, run the loads and the baseline, print a Markdown table."""
    with embedded_platform(apps=(supervisor.SPARK_CONNECT,)) as settings:
        lake = Lake(settings)
        lake.add(EVENTS_COUNT)
        full = run_load(settings)
        increments = []
        for _ in range(INCREMENTS):
            lake.add(INCREMENT_EVENTS)
            increments.append(run_load(settings))
        idle = [run_load(settings) for _ in range(IDLE_RUNS)]
        base = baseline(settings)
        load_average = os.getloadavg()
    idle_cost = measure_idle_cost()
    assert all(r.rows == 0 for r in idle), "an idle run moved rows"
    assert all(r.rows >= INCREMENT_EVENTS for r in increments), "an increment lost rows"
    load_seconds = sum(float(s["seconds"]) for s in full.summaries)
    rate = full.rows / load_seconds
    by_table = ", ".join(f"{s['table']} {s['inserted_rows']:,}" for s in full.summaries)
    inc_wall = _spread([r.wall for r in increments])
    inc_cpu = _spread([r.cpu for r in increments])
    idle_wall = _spread([r.wall for r in idle])
    idle_cpu = _spread([r.cpu for r in idle])
    print(f"\nLoad benchmark: {EVENTS_COUNT:,} events in silver ({by_table} rows), on the "
          f"Spark Connect server (local[2]); load average {load_average[0]:.2f}\n")  # fmt: skip
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| load of the lake, rows/s (the load itself) | {rate:,.0f} ({load_seconds:.1f} s) |")
    print(f"| load of the lake, rows/s (the whole client process) | "
          f"{full.rows / full.wall:,.0f} ({full.wall:.1f} s) |")  # fmt: skip
    print(f"| baseline: row-by-row INSERT, rows/s ({BASELINE_ROWS:,} rows) | {base:,.0f} |")
    print(f"| load / baseline | {rate / base:.1f}x |")
    print(f"| incremental load of {INCREMENT_EVENTS:,} events, wall s (min / median, "
          f"{INCREMENTS} runs) | {inc_wall['min']:.2f} / {inc_wall['median']:.2f} |")  # fmt: skip
    print(f"| incremental load, client CPU s (min / median) | "
          f"{inc_cpu['min']:.2f} / {inc_cpu['median']:.2f} |")  # fmt: skip
    print(f"| idle run (nothing new), wall s (min / median) | "
          f"{idle_wall['min']:.2f} / {idle_wall['median']:.2f} |")  # fmt: skip
    print(f"| idle run, client CPU s (min / median) | "
          f"{idle_cpu['min']:.2f} / {idle_cpu['median']:.2f} |")  # fmt: skip
    print(f"| platform idle cost at the demo rate, cores ({idle_cost['seconds']} s) | "
          f"{idle_cost['cores']:.3f} |")  # fmt: skip
    result = {
        "events": EVENTS_COUNT,
        "tables": full.summaries,
        "rows": full.rows,
        "load_seconds": load_seconds,
        "rows_per_s": rate,
        "wall_seconds": full.wall,
        "rows_per_s_wall": full.rows / full.wall,
        "baseline_rows": BASELINE_ROWS,
        "baseline_rows_per_s": base,
        "speedup": rate / base,
        "increment_events": INCREMENT_EVENTS,
        "increment_wall_seconds": inc_wall,
        "increment_cpu_seconds": inc_cpu,
        "idle_wall_seconds": idle_wall,
        "idle_cpu_seconds": idle_cpu,
        "load_average": load_average,
        "idle_cost": idle_cost,
        "targets": {
            "rows_per_s": TARGET_ROWS_PER_S,
            "speedup": TARGET_SPEEDUP,
            "increment_seconds": TARGET_INCREMENT_SECONDS,
            "idle_cores": TARGET_CORES,
        },
        "met": {
            "rows_per_s": rate >= TARGET_ROWS_PER_S,
            "speedup": rate / base >= TARGET_SPEEDUP,
            "increment_seconds": inc_wall["median"] <= TARGET_INCREMENT_SECONDS,
            "idle_cores": idle_cost["met"],
        },
    }
    print("\n" + orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
