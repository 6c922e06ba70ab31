"""``make bench-stream``: the streaming job's throughput, latency and memory on this machine.

Two phases on one PostgreSQL and pulsar-lite, with one SparkSession (``local[2]``, in this
process) running the real streaming job, each phase with its own tenants, lake and checkpoint:

1. **Backlog**: publish ``BENCH_EVENTS`` events for 4 tenants, then run the job until it
   committed all of them; report events/s from the first micro-batch to the last (JVM start
   excluded), the micro-batch sizes and the peak memory (PSS) of the job's processes.
2. **Steady rate**: with the job running and warmed up, the generator publishes at each rate of
   ``BENCH_RATES`` for ``BENCH_SECONDS``; the latency of every event is the timestamp of the
   silver Delta commit holding it minus its Pulsar publish time; report p50/p95/max.

Markdown tables, then a JSON summary, on stdout.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from generator.catalog import demo_tenant_ids
from include.db import connect
from include.log import configure_logging
from include.settings import Settings
from jobs.stream.job import start_stream
from jobs.stream.session import create_session
from jobs.stream.sink import lake_caught_up
from tests.services import embedded_platform, run_generator

EVENTS = int(os.environ.get("BENCH_EVENTS", "300000"))
BATCH = int(os.environ.get("BENCH_BATCH", "50000"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "5000,10000").split(",") if r]
SECONDS = int(os.environ.get("BENCH_SECONDS", "30"))
TENANTS = ",".join(demo_tenant_ids(4))
TRIGGER_SECONDS = 0.5
# Issue #14's targets.
TARGET_EVENTS_PER_S = 20_000.0  # a backlog of 300,000 events, Pulsar to silver
TARGET_P95_S = 2.0  # publish-to-silver-commit p95 latency ...
TARGET_LATENCY_RATE = 5_000  # ... at this steady publishing rate
TARGET_PEAK_BYTES = 1.5e9  # peak memory of the job's processes (1.5 GB)


def _memory_by_kind(pid: int) -> dict[str, int]:
    """Proportional set size (shared pages split between their users, so the parts add up)
    of the driver (this process), the JVM and the Python workers and daemons it started.

    The bench's other children (the generator publishing the steady phases) are not the
    stream's: they are left out."""
    process = psutil.Process(pid)
    sizes = {"driver": process.memory_full_info().pss, "jvm": 0, "python workers": 0}
    for jvm in process.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if jvm.name() != "java":
                continue
            sizes["jvm"] += jvm.memory_full_info().pss
            for worker in jvm.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    sizes["python workers"] += worker.memory_full_info().pss
    return sizes


@contextlib.contextmanager
def _peak_memory() -> Iterator[dict[str, int]]:
    peak = {"total": 0, "driver": 0, "jvm": 0, "python workers": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sizes = _memory_by_kind(os.getpid())
            sizes["total"] = sum(sizes.values())
            for kind, size in sizes.items():
                peak[kind] = max(peak[kind], size)
            time.sleep(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _committed_rows(settings: Settings) -> tuple[int, int]:
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(input_rows), 0) FROM stream_batches"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _wait_for_rows(settings: Settings, rows: int, query: Any, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while _committed_rows(settings)[1] < rows or not lake_caught_up(
        settings.lake_dir, settings.pg_dsn
    ):
        if not query.isActive:
            raise RuntimeError(f"stream died: {query.exception()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stream committed {_committed_rows(settings)[1]} of {rows}")
        time.sleep(0.5)


def backlog_phase(spark: SparkSession, settings: Settings) -> dict[str, Any]:
    """Throughput and memory while draining a backlog."""
    summary = run_generator(
        settings, "burst", "--count", str(EVENTS), "--seed", "1", "--tenants", TENANTS,
        "--processes", "2",
    )  # fmt: skip
    with _peak_memory() as peak:
        query = start_stream(spark, settings, trigger_seconds=TRIGGER_SECONDS)
        _wait_for_rows(settings, summary["sent"], query)
        query.stop()
    with connect(settings) as conn:
        sizes = [
            r[0]
            for r in conn.execute(
                "SELECT input_rows FROM stream_batches ORDER BY batch_id"
            ).fetchall()
        ]
        span = conn.execute(
            "SELECT extract(epoch FROM max(committed_at) - min(committed_at)) FROM stream_batches"
        ).fetchone()
    # The first batch's own duration is not inside the commit-to-commit span: add it back by
    # assuming it took as long as the average batch.
    batches = len(sizes)
    seconds = float(span[0]) * batches / max(batches - 1, 1) if span else 0.0
    return {
        "summary": summary,
        "rate": sum(sizes) / seconds if seconds else 0.0,
        "sizes": sizes,
        "peak": peak,
    }


def _fresh_run(settings: Settings) -> Settings:
    """The same services with a new lake and checkpoint, earlier tenants and batches retired
    (the Spark workers keep the environment of the first platform, so the bench keeps it)."""
    with connect(settings, autocommit=True) as conn:
        conn.execute("UPDATE tenants SET active = false")
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, stream_heartbeat"
        )
    state_dir = Path(tempfile.mkdtemp(prefix="bench-steady-", dir=settings.state_dir))
    return settings.model_copy(update={"state_dir": state_dir})


def commit_latencies(table_dir: Path, after_version: int) -> list[float]:
    """Seconds from publish to commit of every row added to a Delta table after a version."""
    latencies: list[float] = []
    for log_file in sorted((table_dir / "_delta_log").glob("*.json")):
        version = int(log_file.stem)
        if version <= after_version:
            continue
        actions = [orjson.loads(line) for line in log_file.read_bytes().splitlines() if line]
        committed_ms = next(a["commitInfo"]["timestamp"] for a in actions if "commitInfo" in a)
        for action in actions:
            if "add" not in action:
                continue
            published = pq.read_table(
                table_dir / action["add"]["path"], columns=["publish_time"]
            ).column("publish_time")
            micros = pc.cast(published, "int64").to_pylist()
            latencies += [(committed_ms * 1_000 - us) / 1e6 for us in micros]
    return latencies


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def steady_phase(spark: SparkSession, base: Settings, rate: int) -> dict[str, Any]:
    """Publish-to-commit latency at a steady publishing rate."""
    settings = _fresh_run(base)
    tenants = ",".join(f"steady_{rate}_{i}" for i in range(4))
    warmup = run_generator(
        settings, "burst", "--count", "2000", "--seed", "2", "--tenants", tenants
    )
    query = start_stream(spark, settings, trigger_seconds=TRIGGER_SECONDS)
    try:
        _wait_for_rows(settings, warmup["sent"], query)
        silver = settings.lake_dir / "silver"
        warm_version = max(int(p.stem) for p in (silver / "_delta_log").glob("*.json"))
        with _peak_memory() as peak:
            steady = run_generator(
                settings, "continuous", "--rate", str(rate), "--duration", str(SECONDS),
                "--seed", "3", "--tenants", tenants, "--duplicate-rate", "0",
                "--malformed-rate", "0", "--bad-version-rate", "0",
                "--tenant-mismatch-rate", "0",
                timeout_s=SECONDS * 4 + 120,
            )  # fmt: skip
            _wait_for_rows(settings, warmup["sent"] + steady["sent"], query)
    finally:
        query.stop()
    latencies = commit_latencies(silver, warm_version)
    return {
        "rate": rate,
        "sent": steady["sent"],
        "published_rate": steady["sent"] / max(steady.get("seconds", SECONDS), 1e-6),
        "p50": _percentile(latencies, 0.50),
        "p95": _percentile(latencies, 0.95),
        "max": max(latencies),
        "rows": len(latencies),
        "peak": peak,
    }


def main() -> None:
    """Run both phases and print Markdown tables (each as soon as it is measured); the job's
    log (one JSON line per batch, with its phases) goes to stderr."""
    configure_logging("INFO")
    with embedded_platform(stream_max_records_per_batch=BATCH) as settings:
        spark = create_session(
            "local[2]",
            "bench-stream",
            settings.spark_driver_memory,
            driver_java_options=settings.spark_driver_java_options,
        )
        backlog = backlog_phase(spark, settings)
        summary, sizes, peak = backlog["summary"], backlog["sizes"], backlog["peak"]
        print(
            f"\nStream benchmark: {summary['sent']:,} events "
            f"({summary['average_payload_bytes']} bytes average), 4 tenants, local[2], "
            f"{os.cpu_count()} cores, at most {BATCH:,} events per micro-batch\n"
        )
        print("| measure | value |")
        print("| --- | ---: |")
        print(f"| sustained events/s, Pulsar to silver (backlog) | {backlog['rate']:,.0f} |")
        print(f"| micro-batches | {len(sizes)} (rows: min {min(sizes):,}, max {max(sizes):,}) |")
        print(f"| peak memory (PSS), driver + JVM + Python workers | {_gib(peak['total'])} |")
        for kind in ("driver", "jvm", "python workers"):
            print(f"| peak memory (PSS), {kind} alone | {_gib(peak[kind])} |")
        print(
            "\n| steady rate (events/s) | published | p50 latency | p95 latency | max | peak PSS |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
        runs = []
        for rate in RATES:
            run = steady_phase(spark, settings, rate)
            runs.append(run)
            print(
                f"| {run['rate']:,} | {run['sent']:,} ({run['published_rate']:,.0f}/s) | "
                f"{run['p50']:.2f} s | {run['p95']:.2f} s | {run['max']:.2f} s | "
                f"{_gib(run['peak']['total'])} |",
                flush=True,
            )
    print("\n" + orjson.dumps(_summary(backlog, runs), option=orjson.OPT_INDENT_2).decode())


def _summary(backlog: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON summary: what was measured, the targets and whether each is met."""
    sizes, peak = backlog["sizes"], backlog["peak"]
    at_target = [r for r in runs if r["rate"] == TARGET_LATENCY_RATE]
    peak_bytes = max([peak["total"], *(r["peak"]["total"] for r in runs)])
    return {
        "events": backlog["summary"]["sent"],
        "average_payload_bytes": backlog["summary"]["average_payload_bytes"],
        "max_batch": BATCH,
        "backlog_events_per_s": backlog["rate"],
        "micro_batches": len(sizes),
        "peak_memory_bytes": peak,
        "steady": [
            {k: v for k, v in r.items() if k != "peak"} | {"peak_memory_bytes": r["peak"]["total"]}
            for r in runs
        ],
        "targets": {
            "events_per_s": TARGET_EVENTS_PER_S,
            "p95_s": TARGET_P95_S,
            "p95_at_rate": TARGET_LATENCY_RATE,
            "peak_memory_bytes": TARGET_PEAK_BYTES,
        },
        "met": {
            "events_per_s": backlog["rate"] >= TARGET_EVENTS_PER_S,
            "p95_s": bool(at_target) and at_target[0]["p95"] < TARGET_P95_S,
            "peak_memory_bytes": peak_bytes < TARGET_PEAK_BYTES,
        },
    }


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


if __name__ == "__main__":
    main()
