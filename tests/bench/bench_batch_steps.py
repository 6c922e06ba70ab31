"""Time each micro-batch step, row loop (``tests/columnar_reference.py``) against Arrow compute
(``jobs/stream/shaping.py``), on one seeded random batch::

    python -m tests.bench.bench_batch_steps [--rows 50000] [--repeat 7]

Prints min and median milliseconds per step and the load average. The minute-metric rows are
timed as built for COPY (the tuples ``copy.write_row`` took, against the CSV bytes); the COPY
itself is not part of it (no PostgreSQL here); nor is the read of the fresh keys (a set of
tuples before, an Arrow table from ``COPY ... TO STDOUT`` now).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.stream import job, shaping
from jobs.stream.validate import VALID
from tests import columnar_reference as ref
from tests.random_batches import fresh_keys, random_batch


def _time(step: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    table = random_batch(rng, args.rows, now=now, distinct_events=args.rows * 9 // 10)
    batch = pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in table.columns], schema=table.schema
    )
    summary = pa.Table.from_batches([shaping.summarize(batch)])
    valid_all = summary.filter(pc.equal(summary.column("status"), VALID))
    valid = ref.plan_valid(summary)
    fresh = fresh_keys(rng, table, 0.95)
    chosen_old = ref.silver_messages(valid, fresh)
    # What each read of stream_event_keys gave the choice: a set before, an Arrow table now.
    fresh_table = shaping._keys_table(fresh)
    chosen_new = shaping.silver_messages(valid, fresh_table)
    rows_valid = table.filter(pc.equal(table.column("status"), VALID))
    tenants, events = (valid_all.column(n).to_pylist() for n in ("tenant_id", "event_id"))
    result = SimpleNamespace(
        batch_id=1,
        input_rows=summary.num_rows,
        valid_rows=valid_all.num_rows,
        new_events=len(fresh),
        quarantined_rows=summary.num_rows - valid_all.num_rows,
        skipped_postgres=False,
        skipped_tables=(),
    )
    steps: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("_record (batch metrics)", lambda: ref.record(summary, result, 1.0),
         lambda: job._record(summary, result, 1.0)),
        ("_metric_rows (COPY rows)", lambda: ref.metric_rows(valid),
         lambda: shaping.metric_csv(valid)),
        ("summarize", lambda: ref.summarize(batch), lambda: shaping.summarize(batch)),
        ("end_offsets", lambda: ref.end_offsets(summary, {}),
         lambda: shaping.end_offsets(summary, {})),
        ("_first_occurrences", lambda: ref.first_occurrences(tenants, events),
         lambda: shaping.first_occurrences(valid_all)),
        ("silver choice (plan_batch)", lambda: ref.silver_messages(valid, fresh),
         lambda: shaping.silver_messages(valid, fresh_table)),
        ("silver mask (batch_files)", lambda: ref.rows_of_messages(rows_valid, chosen_old),
         lambda: shaping.rows_of_messages(rows_valid, chosen_new)),
    ]  # fmt: skip
    print(f"{args.rows:,} rows ({valid_all.num_rows:,} valid, {valid.num_rows:,} distinct), "
          f"{args.repeat} runs each, ms")  # fmt: skip
    print(f"{'step':30} {'loop min':>9} {'loop med':>9} {'arrow min':>9} {'arrow med':>9}")
    for name, old, new in steps:
        before, after = _time(old, args.repeat), _time(new, args.repeat)
        print(
            f"{name:30} {min(before):9.1f} {statistics.median(before):9.1f} "
            f"{min(after):9.1f} {statistics.median(after):9.1f}"
        )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
