"""The PostgreSQL step's rows as PostgreSQL reads them: the minute-metric rows sent as Arrow CSV
hold what ``copy.write_row`` of the pre-columnar tuples held (``tests/columnar_reference.py``),
and the fresh keys read back by ``COPY ... TO STDOUT`` are the keys stored. Needs PostgreSQL
only (no Spark)."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc
import pytest

from include.settings import Settings
from include.warehouse.rollups import SLOT_MINUTES
from jobs.stream import postgres_step
from jobs.stream.shaping import SUMMARY_SCHEMA, summarize
from tests import columnar_reference as ref
from tests.random_batches import TENANTS, random_batch

_ALL = "tenant_id, event_id, event_type, minute, amount, items"


def test_metric_rows_and_fresh_keys_survive_the_trip_through_postgres(platform: Settings) -> None:
    import psycopg
    import pyarrow as pa

    table = random_batch(random.Random(7), 3_000, distinct_events=1_200)
    summary = pa.Table.from_batches([summarize(b) for b in table.to_batches()], SUMMARY_SCHEMA)
    valid = ref.plan_valid(summary)
    assert valid.num_rows > 500 and pc.sum(pc.is_null(valid.column("event_type"))).as_py() > 0
    with psycopg.connect(platform.pg_dsn) as conn:
        # A session time zone that is not UTC: both paths must carry the instant, not the text.
        conn.execute("SET TimeZone = 'America/Sao_Paulo'")
        with conn.transaction():
            postgres_step.copy_batch_events(conn, valid)
            conn.execute("CREATE TEMP TABLE loop_events (LIKE batch_events) ON COMMIT DROP")
            with conn.cursor().copy("COPY loop_events FROM STDIN") as copy:
                for row in ref.metric_rows(valid):
                    copy.write_row(row)
            order = f"ORDER BY {_ALL}"
            arrow = conn.execute(f"SELECT {_ALL} FROM batch_events {order}").fetchall()
            loop = conn.execute(f"SELECT {_ALL} FROM loop_events {order}").fetchall()
            assert len(arrow) == valid.num_rows
            assert arrow == loop
            # Row for row in batch order too, and empty strings stay empty, NULLs NULL.
            same = conn.execute(
                "SELECT count(*) FROM (SELECT row_number() OVER () n, * FROM batch_events) a "
                "JOIN (SELECT row_number() OVER () n, * FROM loop_events) b USING (n) "
                "WHERE (a.*) IS NOT DISTINCT FROM (b.*)"
            ).fetchone()
            assert same == (valid.num_rows,)
            empties = conn.execute(
                "SELECT count(*) FILTER (WHERE event_type = ''), "
                "count(*) FILTER (WHERE event_type IS NULL) FROM batch_events"
            ).fetchone()
            assert empties is not None and empties[0] > 0 and empties[1] > 0

        app = f"columnar-test-{uuid.uuid4().hex[:8]}"
        keys = {(t or "t", str(uuid.uuid4())) for t in TENANTS for _ in range(300)}
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO stream_event_keys (tenant_id, event_id, app_id, batch_id) "
                    "VALUES (%s, %s, %s, 4)",
                    [(t, e, app) for t, e in keys],
                )
            conn.commit()
            read = postgres_step.new_keys(conn, app, 4)
            pairs = zip(
                *(read.column(n).to_pylist() for n in ("tenant_id", "event_id")), strict=True
            )
            assert set(pairs) == keys and read.num_rows == len(keys)
            assert postgres_step.new_keys(conn, app, 5).num_rows == 0
        finally:
            conn.execute("DELETE FROM stream_event_keys WHERE app_id = %s", (app,))
            conn.commit()


_MINUTES_SQL = (
    "SELECT tenant_id, minute, event_type, events, amount, items FROM stream_minute_metrics"
)
_SLOTS_SQL = "SELECT tenant_id, slot, event_type, events, amount, items FROM stream_slot_metrics"


def _sums(rows: list[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """(tenant, bucket, type, measure) -> value of a metric table's rows."""
    sums: Counter[tuple[Any, ...]] = Counter()
    for tenant, bucket, kind, events, amount, items in rows:
        for measure, value in (("events", events), ("amount", amount), ("items", items)):
            sums[(tenant, bucket, kind, measure)] += value
    return sums


def _record(conn: Any, app: str, batch_id: int) -> None:
    """What ``count_batch`` records with the counts: the batch's row in ``stream_batches``
    (claims of a batch without it may be taken by the next)."""
    conn.execute(
        "INSERT INTO stream_batches (app_id, batch_id, input_rows, valid_rows, new_events, "
        "quarantined_rows, end_offset) VALUES (%s, %s, 0, 0, 0, 0, '{}')",
        (app, batch_id),
    )


def _slot(minute: datetime) -> datetime:
    # 2000-01-01 (the slots' origin) is on the 15-minute grid of the epoch.
    seconds = SLOT_MINUTES * 60
    return datetime.fromtimestamp(int(minute.timestamp()) // seconds * seconds, UTC)


@pytest.mark.parametrize("seed", [3, 11])
def test_the_counting_statement_counts_each_key_once_into_minutes_and_slots(
    platform: Settings, seed: int
) -> None:
    """Three overlapping batches (keys repeated across batches, null amounts and item counts,
    empty event types, many minutes and slots): what the statement returns and adds to the
    minute and slot sums is what counting each (tenant, event id) at its first batch gives,
    computed here in Python from the rows."""
    import psycopg

    # Keys no other test counted: the batches overlap only where the slices do.
    valid = _distinct_valid(seed)
    third = valid.num_rows // 3
    batches = [valid.slice(0, 2 * third), valid.slice(third), valid]

    seen: set[tuple[str, str]] = set()
    expected_fresh = []
    minutes: Counter[tuple[Any, ...]] = Counter()
    slots: Counter[tuple[Any, ...]] = Counter()
    for rows in batches:
        fresh = 0
        for row in rows.to_pylist():
            if (row["tenant_id"], row["event_id"]) in seen:
                continue
            seen.add((row["tenant_id"], row["event_id"]))
            fresh += 1
            minute = row["event_time"].replace(second=0, microsecond=0)
            amount, items = row["order_total_amount"] or 0, row["item_quantity"] or 0
            for bucket, sums in ((minute, minutes), (_slot(minute), slots)):
                key = (row["tenant_id"], bucket, row["event_type"])
                sums[(*key, "events")] += 1
                sums[(*key, "amount")] += amount
                sums[(*key, "items")] += items
        expected_fresh.append(fresh)
    assert expected_fresh == [2 * third, valid.num_rows - 2 * third, 0]

    app = f"count-test-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform.pg_dsn) as conn, conn.transaction(force_rollback=True):
        before = (
            _sums(conn.execute(_MINUTES_SQL).fetchall()),
            _sums(conn.execute(_SLOTS_SQL).fetchall()),
        )
        returned = []
        for batch_id, rows in enumerate(batches):
            postgres_step.copy_batch_events(conn, rows)
            row = conn.execute(
                postgres_step.COUNT_NEW_EVENTS_SQL, {"app": app, "batch": batch_id}
            ).fetchone()
            assert row is not None
            returned.append(row[0])
            conn.execute("DROP TABLE batch_events")
            _record(conn, app, batch_id)
        after = (
            _sums(conn.execute(_MINUTES_SQL).fetchall()),
            _sums(conn.execute(_SLOTS_SQL).fetchall()),
        )
        keys = conn.execute(
            "SELECT batch_id, count(*) FROM stream_event_keys WHERE app_id = %s GROUP BY 1",
            (app,),
        ).fetchall()
    assert returned == expected_fresh
    assert sorted(keys) == [(0, expected_fresh[0]), (1, expected_fresh[1])]
    for (old, new), expected in zip(zip(before, after, strict=True), (minutes, slots), strict=True):
        added = {k: v - old.get(k, 0) for k, v in new.items()}
        assert {k: v for k, v in added.items() if v != 0} == {
            k: v for k, v in expected.items() if v != 0
        }


# -- the tasks' claims ----------------------------------------------------------------------------
def _distinct_valid(seed: int, rows: int = 4_000) -> Any:
    """A random batch's distinct valid rows (every counted column set, null amounts and item
    counts among them), with event ids no other test counted."""
    import pyarrow as pa

    table = random_batch(random.Random(seed), rows, distinct_events=rows * 3 // 8)
    summary = pa.Table.from_batches([summarize(b) for b in table.to_batches()], SUMMARY_SCHEMA)
    valid = ref.plan_valid(summary)
    for column in ("event_id", "tenant_id", "event_type", "event_time"):  # never null in valid
        valid = valid.filter(pc.is_valid(valid[column]))
    assert pc.sum(pc.is_null(valid.column("order_total_amount"))).as_py() > 0
    ids = pa.array([str(uuid.uuid4()) for _ in range(valid.num_rows)], pa.string())
    return valid.set_column(valid.schema.get_field_index("event_id"), "event_id", ids)


def _claim(conn: Any, app: str, batch_id: int, rows: Any) -> Any:
    """What the batch's tasks do: claim each tenant's keys; the rows of ``rows`` they now hold."""
    held: set[tuple[str, str]] = set()
    columns = (rows.column(n).to_pylist() for n in ("tenant_id", "event_id"))
    keys = list(zip(*columns, strict=True))
    for tenant in sorted({t for t, _ in keys}):
        ids = [e for t, e in keys if t == tenant]
        held |= {(tenant, e) for e in postgres_step.claim_keys(conn, app, batch_id, tenant, ids)}
    return rows.filter([k in held for k in keys])


def _count(conn: Any, app: str, batch_id: int, rows: Any, claimed: Any = None) -> tuple[int, bool]:
    """``count_batch`` of a batch whose distinct valid rows are ``rows`` (inside the test's
    transaction, whose end would drop its temporary tables)."""
    counted = postgres_step.count_batch(
        conn,
        app_id=app,
        job=f"test-{app}",
        batch_id=batch_id,
        valid=rows,
        table=rows,
        quarantined=rows.slice(0, 0),
        offsets={},
        entry_sizes={},
        started=0.0,
        claimed=claimed,
    )
    conn.execute("DROP TABLE IF EXISTS batch_events, per_minute")
    return counted


def _state(conn: Any, app: str) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]], Any]:
    """The minute sums, the slot sums, and the keys of ``app`` per batch."""
    keys = conn.execute(
        "SELECT batch_id, tenant_id, event_id::text FROM stream_event_keys WHERE app_id = %s "
        "ORDER BY 1, 2, 3",
        (app,),
    ).fetchall()
    return (
        _sums(conn.execute(_MINUTES_SQL).fetchall()),
        _sums(conn.execute(_SLOTS_SQL).fetchall()),
        keys,
    )


def _added(before: Counter[tuple[Any, ...]], after: Counter[tuple[Any, ...]]) -> dict[Any, Any]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


@pytest.mark.parametrize("seed", [5, 17])
def test_the_tasks_claims_count_what_the_driver_side_statement_counts(
    platform: Settings, seed: int
) -> None:
    """Differential: three overlapping batches counted from the tasks' claims (summed in Arrow)
    and by the driver's statement (summed in SQL) add the same minute and slot sums, return the
    same new events, and leave the same keys per batch."""
    import psycopg

    valid = _distinct_valid(seed)
    third = valid.num_rows // 3
    batches = [valid.slice(0, 2 * third), valid.slice(third), valid]
    outcome = {}
    for path in ("driver", "tasks"):
        app = f"claim-{path}-{uuid.uuid4().hex[:8]}"
        with psycopg.connect(platform.pg_dsn) as conn, conn.transaction(force_rollback=True):
            minutes, slots, _ = _state(conn, app)
            returned = []
            for batch_id, rows in enumerate(batches):
                claimed = _claim(conn, app, batch_id, rows) if path == "tasks" else None
                returned.append(_count(conn, app, batch_id, rows, claimed))
            after = _state(conn, app)
        outcome[path] = (_added(minutes, after[0]), _added(slots, after[1]), after[2], returned)
    driver, tasks = outcome["driver"], outcome["tasks"]
    assert [n for n, _ in driver[3]] == [2 * third, valid.num_rows - 2 * third, 0]
    assert [n for n, _ in tasks[3]] == [n for n, _ in driver[3]]
    assert [by for _, by in driver[3]] == [False] * 3
    assert [by for _, by in tasks[3]] == [True] * 3
    assert driver[0] and tasks[0] == driver[0]
    assert driver[1] and tasks[1] == driver[1]
    assert tasks[2] == driver[2] and len(tasks[2]) == valid.num_rows


def test_claims_of_a_batch_never_recorded_are_taken_by_its_replay_or_a_new_app(
    platform: Settings,
) -> None:
    """A crash after the tasks claimed, before the driver's transaction: the batch run again
    under its own id, or after a lost checkpoint under a new app id, holds every key again and
    counts each once."""
    import psycopg

    rows = _distinct_valid(23, 1_500)
    old, new = (f"claim-crash-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with psycopg.connect(platform.pg_dsn) as conn:
        for replay_app, replay_batch in ((old, 7), (new, 0)):
            with conn.transaction(force_rollback=True):
                before = _state(conn, old)
                assert _claim(conn, old, 7, rows).num_rows == rows.num_rows  # then the crash
                claimed = _claim(conn, replay_app, replay_batch, rows)
                assert claimed.num_rows == rows.num_rows
                assert _count(conn, replay_app, replay_batch, rows, claimed) == (
                    rows.num_rows,
                    True,
                )
                after = _state(conn, replay_app)
                assert {b for b, _, _ in after[2]} == {replay_batch}
                assert len(after[2]) == rows.num_rows
                if replay_app == new:
                    assert _state(conn, old)[2] == []
                added = _added(before[0], after[0])
                assert sum(v for (*_, m), v in added.items() if m == "events") == rows.num_rows


def test_keys_a_recorded_batch_counted_stay_its_own(platform: Settings) -> None:
    """A new app's batch that repeats events a recorded batch counted holds only the others,
    and so does the recorded batch's own replay (it holds none: the driver skips it)."""
    import psycopg

    rows = _distinct_valid(29, 1_500)
    half = rows.num_rows // 2
    first, second = rows.slice(0, half), rows.slice(half // 2)
    old, new = (f"claim-kept-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with psycopg.connect(platform.pg_dsn) as conn, conn.transaction(force_rollback=True):
        assert _count(conn, old, 0, first, _claim(conn, old, 0, first)) == (half, True)
        assert _claim(conn, old, 1, first).num_rows == 0
        claimed = _claim(conn, new, 0, second)
        assert claimed.num_rows == rows.num_rows - half
        assert _count(conn, new, 0, second, claimed) == (rows.num_rows - half, True)
        assert len(_state(conn, old)[2]) == half
        assert len(_state(conn, new)[2]) == rows.num_rows - half


def test_claims_an_earlier_run_left_are_released_by_the_driver_side_count(
    platform: Settings,
) -> None:
    """An earlier run of the batch claimed keys this run does not hold (its messages were
    validated differently): the claims do not match, the driver's statement counts the batch,
    and the keys the batch holds are exactly this run's."""
    import psycopg

    rows = _distinct_valid(31, 1_500)
    kept = rows.slice(0, rows.num_rows - 100)
    app = f"claim-stray-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(platform.pg_dsn) as conn, conn.transaction(force_rollback=True):
        before = _state(conn, app)
        _claim(conn, app, 2, rows)  # the earlier run, then a crash
        claimed = _claim(conn, app, 2, kept)
        assert claimed.num_rows == kept.num_rows
        assert _count(conn, app, 2, kept, claimed) == (kept.num_rows, False)
        after = _state(conn, app)
        assert len(after[2]) == kept.num_rows
        held = {e for _, _, e in after[2]}
        assert held == set(kept.column("event_id").to_pylist())
        added = _added(before[0], after[0])
        assert sum(v for (*_, m), v in added.items() if m == "events") == kept.num_rows
