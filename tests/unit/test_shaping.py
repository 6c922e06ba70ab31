"""The micro-batch's Arrow shaping against the row loops it replaced
(``tests/columnar_reference.py``, the pre-columnar implementation kept as the oracle), on seeded
random batches of the real schemas, plus a few hand-worked cases."""

from __future__ import annotations

import logging
import random
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from jobs.stream import job, shaping
from jobs.stream.sink import TABLES, LakeSink
from jobs.stream.validate import OUTPUT_SCHEMA, QUARANTINED, VALID
from tests import columnar_reference as ref
from tests.random_batches import fresh_keys, random_batch

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SIZES = [0, 1, 7, 300, 2_500]
SEEDS = range(6)


def _batch(seed: int, rows: int) -> pa.Table:
    # Few distinct events: many duplicate keys.
    return random_batch(random.Random(seed), rows, now=NOW, distinct_events=max(rows // 3, 1))


def _summary(table: pa.Table) -> pa.Table:
    batches = [ref.summarize(b) for b in table.to_batches()]
    return pa.Table.from_batches(batches, schema=shaping.SUMMARY_SCHEMA)


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [c.combine_chunks() for c in table.columns], schema=table.schema
    )


def _valid(summary: pa.Table) -> pa.Table:
    return summary.filter(pc.equal(summary.column("status"), VALID))


# -- summarize ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_summarize_matches_the_row_loop(seed: int, rows: int) -> None:
    table = _batch(seed, rows)
    for batch in [*table.to_batches(max_chunksize=97), _one_batch(table)]:
        assert shaping.summarize(batch).equals(ref.summarize(batch))
    if rows > 20:  # a slice: offsets into the list column that do not start at 0
        piece = _one_batch(table).slice(11, rows - 20)
        assert shaping.summarize(piece).equals(ref.summarize(piece))


def test_summarize_by_hand() -> None:
    two_lines = [
        {"line_number": n, "sku": "b", "quantity": q, "unit_price": Decimal("2.50")}
        for n, q in ((1, 10_000), (2, 1))
    ]
    one_line = [{"line_number": 1, "sku": "a", "quantity": 3, "unit_price": Decimal("1")}]
    items = pa.array(
        [None, [], one_line, two_lines],
        OUTPUT_SCHEMA.field("items").type,
    )
    rows = pa.table(
        {n: pa.nulls(4, OUTPUT_SCHEMA.field(n).type) for n in OUTPUT_SCHEMA.names if n != "items"}
        | {"items": items}
    ).select(OUTPUT_SCHEMA.names)
    summary = shaping.summarize(rows.to_batches()[0])
    assert summary.column("item_quantity").to_pylist() == [0, 0, 3, 10_001]
    assert summary.schema == shaping.SUMMARY_SCHEMA


# -- first occurrences -------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_first_occurrences_match_the_row_loop(seed: int, rows: int) -> None:
    valid = _valid(_summary(_batch(seed, rows)))
    expected = ref.first_occurrences(
        valid.column("tenant_id").to_pylist(), valid.column("event_id").to_pylist()
    )
    chosen = shaping.first_occurrences(valid)
    assert chosen.type == pa.int64()
    assert chosen.to_pylist() == expected
    # Replays choose the same rows: the same input, chunked differently, the same indexes.
    rechunked = pa.Table.from_batches(valid.to_batches(max_chunksize=13), schema=valid.schema)
    assert shaping.first_occurrences(rechunked).to_pylist() == expected


def test_first_occurrences_by_hand() -> None:
    table = pa.table(
        {
            "tenant_id": ["a", "b", "a", None, "a", None, "b"],
            "event_id": ["1", "1", "1", "1", "2", "1", "1"],
        }
    )
    assert shaping.first_occurrences(table).to_pylist() == [0, 1, 3, 4]


# -- end offsets ---------------------------------------------------------------------------------
def _previous(rng: random.Random) -> dict[str, list[int]]:
    topics = rng.sample(["persistent://public/default/t0.events", "gone", "t2", "t3"], 2)
    return {
        (f"persistent://public/default/{t}.events" if t.startswith("t") else t): [
            rng.choice([9, 10, 123, 1000, 5000]),
            rng.randrange(2_500),
            -1,
        ]
        for t in topics
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_end_offsets_match_the_row_loop(seed: int, rows: int) -> None:
    summary = _summary(_batch(seed, rows))
    previous = _previous(random.Random(seed))
    kept = {t: list(p) for t, p in previous.items()}
    assert shaping.end_offsets(summary, previous) == ref.end_offsets(summary, previous)
    assert shaping.end_offsets(summary, {}) == ref.end_offsets(summary, {})
    assert previous == kept


def test_end_offsets_compare_numbers_not_strings() -> None:
    table = pa.table(
        {
            "topic": ["a", "a", "a", "b", "b"],
            "message_id": ["9:99:0", "10:2:0", "10:10:3", "123:7:1", "45:900:0"],
        }
    )
    assert shaping.end_offsets(table, {"b": [123, 8, -1], "c": [1, 1, -1]}) == {
        "a": [10, 10, -1],
        "b": [123, 8, -1],
        "c": [1, 1, -1],
    }


def test_end_offsets_refuse_a_malformed_message_id() -> None:
    with pytest.raises((ValueError, pa.ArrowInvalid)):
        shaping.end_offsets(pa.table({"topic": ["a"], "message_id": ["1:2"]}), {})
    with pytest.raises((ValueError, pa.ArrowInvalid)):
        shaping.end_offsets(pa.table({"topic": ["a"], "message_id": ["1:x:0"]}), {})


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_entry_sizes_count_messages_and_distinct_entries(seed: int, rows: int) -> None:
    summary = _summary(_batch(seed, rows))
    expected: dict[str, tuple[int, set[tuple[int, int]]]] = {}
    for topic, message_id in zip(
        summary.column("topic").to_pylist(), summary.column("message_id").to_pylist(), strict=True
    ):
        ledger, entry, _ = (int(part) for part in message_id.split(":"))
        messages, entries = expected.get(topic, (0, set()))
        entries.add((ledger, entry))
        expected[topic] = (messages + 1, entries)
    assert shaping.entry_sizes(summary) == {
        topic: [messages, len(entries)] for topic, (messages, entries) in expected.items()
    }


def test_entry_sizes_tell_entries_of_other_ledgers_apart() -> None:
    table = pa.table(
        {
            "topic": ["a", "a", "a", "a", "b"],
            "message_id": ["1:5:0", "1:5:1", "2:5:0", "1:6:-1", "1:5:0"],
        }
    )
    assert shaping.entry_sizes(table) == {"a": [4, 3], "b": [1, 1]}


# -- the minute-metric rows (COPY batch_events) ---------------------------------------------------
_FIELD = re.compile(r'"((?:[^"]|"")*)"|([^,\n]*)')


def _parse_postgres_csv(data: bytes) -> list[tuple[Any, ...]]:
    """Read CSV as ``COPY ... (FORMAT csv)`` does: a quoted field is a string (``""`` inside
    is a quote), an unquoted empty field is NULL; then the batch_events column types."""
    text, rows, at = data.decode(), [], 0
    while at < len(text):
        fields: list[str | None] = []
        while True:
            match = _FIELD.match(text, at)
            assert match is not None
            quoted, plain = match.groups()
            fields.append(quoted.replace('""', '"') if quoted is not None else (plain or None))
            at = match.end()
            if at >= len(text) or text[at] == "\n":
                at += 1
                break
            assert text[at] == ","
            at += 1
        tenant, event, kind, minute, amount, items = fields
        rows.append(
            (
                tenant,
                event,
                kind,
                None if minute is None else datetime.fromisoformat(minute),
                None if amount is None else Decimal(amount),
                None if items is None else int(items),
            )
        )
    return rows


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_metric_csv_holds_the_rows_copy_wrote_one_by_one(seed: int, rows: int) -> None:
    valid = ref.plan_valid(_summary(_batch(seed, rows)))
    expected = ref.metric_rows(valid)
    parsed = _parse_postgres_csv(shaping.metric_csv(valid).to_pybytes())
    assert parsed == expected
    # Exact types, not just equal values: money stays Decimal at its scale, minutes are UTC.
    for got, want in zip(parsed, expected, strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]
        if want[4] is not None:
            assert got[4].as_tuple() == want[4].as_tuple()
        if want[3] is not None:
            assert got[3].utcoffset() == timedelta(0)


def test_metric_csv_by_hand() -> None:
    valid = pa.table(
        {
            "tenant_id": ['a,"b"', ""],
            "event_id": ["0b6f8d3e-0000-4000-8000-000000000001", None],
            "event_type": [None, ""],
            "event_time": pa.array(
                [datetime(2026, 11, 20, 10, 1, 59, 999_999, tzinfo=UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "order_total_amount": pa.array([Decimal("-12.30"), None], pa.decimal128(18, 2)),
            "item_quantity": pa.array([7, 0], pa.int64()),
        }
    )
    assert shaping.metric_csv(valid).to_pybytes() == (
        b'"a,""b""","0b6f8d3e-0000-4000-8000-000000000001",,2026-11-20 10:01:00.000000Z,'
        b'-12.30,7\n"",,"",,,0\n'
    )
    assert shaping.metric_csv(valid.slice(0, 0)).size == 0


# -- silver's rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_silver_choice_and_mask_match_the_row_loops(seed: int, rows: int) -> None:
    table = _batch(seed, rows)
    valid = ref.plan_valid(_summary(table))
    for fresh in (
        fresh_keys(random.Random(seed), table),
        set(),
        fresh_keys(random.Random(0), table, 1),
    ):
        expected = ref.silver_messages(valid, fresh)
        chosen = shaping.silver_messages(valid, fresh)
        pairs = list(zip(*(chosen.column(n).to_pylist() for n in shaping.MESSAGE_KEY), strict=True))
        assert set(pairs) == expected
        rows_valid = table.filter(pc.equal(table.column("status"), VALID))
        assert shaping.rows_of_messages(rows_valid, chosen).equals(
            ref.rows_of_messages(rows_valid, expected)
        )


class _NoPostgres(LakeSink):
    """The sink with a set for ``stream_event_keys`` and no Delta tables yet (every table
    pending), like ``tests/integration/test_erasure_lake.py``'s."""

    def __init__(self, fresh: set[tuple[str, str]]) -> None:
        super().__init__(Path("/nonexistent"), dsn="", app_id="unit")
        self.fresh = fresh
        self.counted: pa.Table | None = None
        self.read_back = 0

    def _write_postgres(
        self,
        valid: pa.Table,
        batch_id: int,
        table: pa.Table,
        quarantined: pa.Table,
        started: float,
        claimed: pa.Table | None = None,
    ) -> tuple[bool, int, bool]:
        self.counted = valid
        return False, len(self.fresh), False

    def _new_keys(self, batch_id: int) -> set[tuple[str, str]]:
        self.read_back += 1
        return self.fresh

    def committed_version(self, name: str) -> int | None:
        return None


@pytest.mark.parametrize("seed", SEEDS)
def test_plan_batch_chooses_what_the_row_loops_chose(seed: int) -> None:
    table = _batch(seed, 1_200)
    summary = _summary(table)
    fresh = fresh_keys(random.Random(seed), table)
    sink = _NoPostgres(fresh)
    plan = sink.plan_batch(summary, 3)
    valid = ref.plan_valid(summary)
    assert sink.counted is not None and sink.counted.equals(valid)
    assert plan.pending == TABLES
    assert plan.result.valid_rows == _valid(summary).num_rows
    assert (
        plan.result.quarantined_rows
        == pc.sum(pc.equal(summary.column("status"), QUARANTINED)).as_py()
    )
    rows_valid = table.filter(pc.equal(table.column("status"), VALID))
    assert shaping.rows_of_messages(rows_valid, plan.silver_messages).equals(
        ref.rows_of_messages(rows_valid, ref.silver_messages(valid, fresh))
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_a_batch_whose_keys_are_all_new_chooses_them_without_reading_them_back(seed: int) -> None:
    table = _batch(seed, 1_200)
    summary = _summary(table)
    valid = ref.plan_valid(summary)
    every_key = set(
        zip(*(valid.column(n).to_pylist() for n in ("tenant_id", "event_id")), strict=True)
    )
    assert len(every_key) == valid.num_rows
    sink = _NoPostgres(every_key)
    plan = sink.plan_batch(summary, 3)
    assert sink.read_back == 0
    rows_valid = table.filter(pc.equal(table.column("status"), VALID))
    assert shaping.rows_of_messages(rows_valid, plan.silver_messages).equals(
        ref.rows_of_messages(rows_valid, ref.silver_messages(valid, every_key))
    )
    # One key fewer is new: the keys are read back.
    sink = _NoPostgres(every_key - {next(iter(every_key))})
    sink.plan_batch(summary, 3)
    assert sink.read_back == 1


# -- the batch's metrics and log line -------------------------------------------------------------
class _Metric:
    def __init__(self, name: str, calls: list[tuple[Any, ...]]) -> None:
        self.name, self.calls = name, calls
        self.label: tuple[str, ...] = ()

    def labels(self, *values: Any) -> _Metric:
        child = _Metric(self.name, self.calls)
        child.label = tuple(str(v) for v in values)  # prometheus_client's str() of each value
        return child

    def __getattr__(self, method: str) -> Any:
        return lambda *args: self.calls.append((self.name, self.label, method, *args))


def _fake_metrics(calls: list[tuple[Any, ...]]) -> SimpleNamespace:
    names = [
        "INPUT_ROWS",
        "NEW_EVENTS",
        "QUARANTINED",
        "BATCH_SECONDS",
        "ROWS_PER_SECOND",
        "LAG_SECONDS",
        "LAST_BATCH",
        "LAST_BATCH_TIME",
    ]
    return SimpleNamespace(**{n: _Metric(n, calls) for n in names})


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _FrozenClock:
        return cls.fromtimestamp(NOW.timestamp(), tz)


def _totals(calls: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], Any]:
    """Each metric child's value after the calls (increments add up, sets keep the last)."""
    totals: dict[tuple[Any, ...], Any] = {}
    for name, label, method, *args in calls:
        key = (name, label, method)
        totals[key] = totals.get(key, 0) + args[0] if method == "inc" else tuple(args)
    return totals


def _run_record(
    module: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    summary: pa.Table,
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    calls: list[tuple[Any, ...]] = []
    result = SimpleNamespace(
        batch_id=5,
        input_rows=summary.num_rows,
        valid_rows=3,
        new_events=2,
        quarantined_rows=1,
        skipped_postgres=False,
        skipped_tables=("bronze",),
        claimed_by_tasks=True,
    )
    with monkeypatch.context() as patch:
        patch.setattr(module, "metrics", _fake_metrics(calls))
        patch.setattr(module, "datetime", _FrozenClock)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="jobs.stream"):
            record = ref.record if module is ref else module._record
            record(summary, result, 1.5)
    (line,) = [r for r in caplog.records if r.getMessage() == "batch committed"]
    fields = [
        "batch_id",
        "input_rows",
        "valid_rows",
        "new_events",
        "quarantined_rows",
        "quarantined_by_reason",
        "seconds",
        "rows_per_second",
        "lag_seconds",
        "replayed",
        "skipped_tables",
    ]
    return calls, {f: getattr(line, f) for f in fields}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rows", SIZES)
def test_record_reports_what_the_row_loop_reported(
    seed: int, rows: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    summary = _summary(_batch(seed, rows))
    old_calls, old_line = _run_record(ref, monkeypatch, caplog, summary)
    new_calls, new_line = _run_record(job, monkeypatch, caplog, summary)
    assert _totals(new_calls) == _totals(old_calls)
    # The log line: same values, and its dicts in the same order.
    assert new_line == old_line
    for key in ("quarantined_by_reason", "lag_seconds"):
        assert list(new_line[key]) == list(old_line[key])
    lags = [c for c in new_calls if c[0] == "LAG_SECONDS"]
    assert lags == [c for c in old_calls if c[0] == "LAG_SECONDS"]


def test_batch_figures_by_hand() -> None:
    stamp = pa.timestamp("us", tz="UTC")
    summary = pa.table(
        {
            "status": [VALID, QUARANTINED, QUARANTINED, VALID, QUARANTINED],
            "topic_tenant": ["a", None, "a", "b", None],
            "reason": [None, "unknown_tenant", None, None, "unknown_tenant"],
            "publish_time": pa.array(
                [
                    NOW - timedelta(seconds=30),
                    NOW - timedelta(seconds=5),
                    NOW - timedelta(seconds=10),
                    NOW + timedelta(seconds=2),  # b's only message: 2 s ahead, no lag figure
                    NOW + timedelta(microseconds=999_999),  # counted: -0.999999 s > -1 s
                ],
                stamp,
            ),
        }
    )
    figures = shaping.batch_figures(summary, NOW)
    assert figures.input_by_tenant == {"a": 2, None: 2, "b": 1}
    assert figures.quarantined_by_reason == {(None, "unknown_tenant"): 2, ("a", None): 1}
    assert figures.lag_seconds == {"a": 30.0, "unknown": 5.0}
    assert shaping.lag_seconds(summary, NOW) == 30.0
    assert shaping.lag_seconds(summary.slice(0, 0), NOW) is None


def test_keys_read_from_postgres_csv_choose_the_same_messages() -> None:
    data = b'"a,""b""\nc",0b6f8d3e-0000-4000-8000-000000000001\nplain,x\n"",y\n'
    keys = shaping.keys_from_csv(data)
    assert list(zip(*(keys.column(n).to_pylist() for n in shaping.EVENT_KEY), strict=True)) == [
        ('a,"b"\nc', "0b6f8d3e-0000-4000-8000-000000000001"),
        ("plain", "x"),
        ("", "y"),
    ]
    assert shaping.keys_from_csv(b"").num_rows == 0
    table = _batch(3, 800)
    valid = ref.plan_valid(_summary(table))
    fresh = fresh_keys(random.Random(3), table)
    as_table = shaping.silver_messages(valid, shaping._keys_table(fresh))
    order = [(n, "ascending") for n in shaping.MESSAGE_KEY]
    assert as_table.sort_by(order).equals(shaping.silver_messages(valid, fresh).sort_by(order))


def test_keys_with_nul_bytes_are_not_confused() -> None:
    # Joined with a NUL, ("a\0b", "c") and ("a", "b\0c") would be one key: the data holds a
    # NUL in the second column, so the choice falls back to a join on both columns.
    valid = pa.table(
        {
            "tenant_id": ["a\x00b", "a", "x"],
            "event_id": ["c", "b\x00c", "y"],
            "topic": ["t", "t", "u\x00"],
            "message_id": ["1:1:0", "1:2:0", "\x001:3:0"],
        }
    )
    fresh = {("a\x00b", "c"), ("x", "y")}
    chosen = shaping.silver_messages(valid, fresh)
    assert set(zip(*(chosen.column(n).to_pylist() for n in shaping.MESSAGE_KEY), strict=True)) == {
        ("t", "1:1:0"),
        ("u\x00", "\x001:3:0"),
    }
    assert ref.silver_messages(valid, fresh) == {("t", "1:1:0"), ("u\x00", "\x001:3:0")}
    kept = shaping.rows_of_messages(valid, chosen.slice(0, 1))
    assert kept.column("message_id").to_pylist() == ["1:1:0"]


# -- filters that copy only when they drop ---------------------------------------------------------
@pytest.mark.parametrize(
    "mask",
    [[True, True, True], [True, None, True], [False, False, False], [True, False, True], []],
)
def test_rows_where_is_filter_and_copies_nothing_when_it_keeps_every_row(
    mask: list[bool | None],
) -> None:
    rows = pa.table({"a": pa.array(range(len(mask)), pa.int64())})
    array = pa.chunked_array([pa.array(mask, pa.bool_())], pa.bool_())
    assert shaping.rows_where(rows, array).equals(rows.filter(array))
    if all(m is True for m in mask):
        assert shaping.rows_where(rows, array) is rows


def test_no_rows_is_an_empty_table_of_the_schema() -> None:
    schema = pa.schema([("tenant_id", pa.string()), ("n", pa.int64())])
    table = shaping.no_rows(schema)
    assert table.num_rows == 0 and table.schema == schema


def test_the_stream_driver_and_workers_do_not_import_pandas() -> None:
    """40 MiB of every process that imports it; nothing on the stream's path needs it."""
    code = (
        "import sys, jobs.stream.job, jobs.stream.worker_daemon\n"
        "from jobs.stream import landing, shaping\n"
        "shaping.no_rows(landing.TASK_SUMMARY_SCHEMA)\n"
        "print('pandas' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stderr[-2000:]
