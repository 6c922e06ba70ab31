"""``make bench-stream``: sustained events/s from Pulsar to silver on this machine.

Starts its own PostgreSQL and pulsar-lite, publishes a backlog of ``BENCH_EVENTS`` events for
4 tenants, then runs the streaming job (``local[2]``, in this process) until silver holds every
event, and reports events/s from the first micro-batch to the last (JVM start excluded), the
micro-batch sizes, and the peak resident memory of the job's processes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import psutil

from generator.catalog import demo_tenant_ids
from include.db import connect
from jobs.stream.job import start_stream
from jobs.stream.session import create_session
from tests.services import embedded_platform, run_generator

EVENTS = int(os.environ.get("BENCH_EVENTS", "200000"))


def _tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    with embedded_platform(stream_max_records_per_batch=50_000) as settings:
        tenants = ",".join(demo_tenant_ids(4))
        summary = run_generator(
            settings,
            "burst",
            "--count",
            str(EVENTS),
            "--seed",
            "1",
            "--tenants",
            tenants,
            "--processes",
            "2",
        )
        spark = create_session("local[2]", "bench-stream")
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(os.getpid()))
                time.sleep(0.5)

        threading.Thread(target=sample, daemon=True).start()
        query = start_stream(spark, settings, trigger_seconds=0.5)
        first = None
        while True:
            with connect(settings) as conn:
                row = conn.execute(
                    "SELECT count(*), coalesce(sum(input_rows), 0), min(committed_at), "
                    "max(committed_at) FROM stream_batches"
                ).fetchone()
            assert row is not None
            if first is None and row[0] > 0:
                first = time.monotonic()
            if row[1] >= summary["sent"]:
                break
            if not query.isActive:
                raise RuntimeError(f"stream died: {query.exception()}")
            time.sleep(0.5)
        query.stop()
        stop.set()
        with connect(settings) as conn:
            sizes = [
                r[0]
                for r in conn.execute(
                    "SELECT input_rows FROM stream_batches ORDER BY batch_id"
                ).fetchall()
            ]
            span = conn.execute(
                "SELECT extract(epoch FROM max(committed_at) - min(committed_at)) "
                "FROM stream_batches"
            ).fetchone()
        # The first batch's own duration is not inside the commit-to-commit span: add it back
        # by assuming it took as long as the average batch.
        batches = len(sizes)
        seconds = float(span[0]) * batches / max(batches - 1, 1) if span else 0.0
        rate = sum(sizes) / seconds if seconds else 0.0
    print(
        f"\nStream benchmark: {summary['sent']:,} events ({summary['average_payload_bytes']} "
        f"bytes average), 4 tenants, local[2], {os.cpu_count()} cores\n"
    )
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| sustained events/s, Pulsar to silver | {rate:,.0f} |")
    print(f"| micro-batches | {batches} (rows: min {min(sizes):,}, max {max(sizes):,}) |")
    print(f"| peak RSS, driver + JVM + Python workers | {peak[0] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
