"""GDPR erasure against real Delta tables, a real archive and a real PostgreSQL.

The lake is written by the streaming sink's Delta half (``LakeSink.write_batch``) from
generator messages run through the stream's validation, so every table has its real columns
and partitions. One customer of tenant A is then erased: their rows must be gone from the four
tables and the archive, and every other row (other customers, tenant B's customer with the same
id, a look-alike id) must still be there, counted exactly.
"""

from __future__ import annotations

import random
import re
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path

import orjson
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from generator.catalog import Merchant, merchant_profile
from generator.messages import FaultShares, OutgoingMessage, message_stream
from generator.sessions import SessionFactory
from include.db import connect
from include.lake.archive import archive_old_partitions, read_manifest, verify
from include.lake.erasure import LakeErasure, archived_files, erase_customer_from_lake
from include.privacy import customer_hash
from include.settings import Settings
from include.tenants import register_tenant, topic_for
from include.warehouse.erasure import (
    ErasureAlreadyCompletedError,
    ErasureRequestError,
    UnknownErasureRequestError,
    complete,
    fail,
    mark_running,
)
from include.warehouse.partitions import Month, ensure_partitions
from jobs.stream.partition_read import ARROW_SCHEMA
from jobs.stream.sink import LakeSink
from jobs.stream.validate import validate_batch

TENANT_A, TENANT_B = "erase_alpha", "erase_beta"
TEMPLATE = "persistent://public/default/{tenant_id}.events"
TARGET = "c_777777"
LOOK_ALIKE = TARGET + "0"  # contains the target's id: must survive
# Fixed days: validation is given its publish and ingest times and the archive its cut-off, so
# nothing in the lake half compares them with today.
DAY_ONE, DAY_TWO = date(2026, 11, 19), date(2026, 11, 20)
TABLES = ("silver", "bronze", "event_items", "quarantine")
# What identifies a row of each table, and what else the reference needs to read.
KEYS: dict[str, tuple[str, ...]] = {
    "silver": ("tenant_id", "event_id"),
    "bronze": ("tenant_id", "event_id", "message_id"),
    "event_items": ("tenant_id", "event_id", "line_number"),
    "quarantine": ("topic_tenant", "topic", "message_id"),
}
EXTRA: dict[str, tuple[str, ...]] = {
    "silver": ("customer_customer_id",),
    "bronze": (),
    "event_items": (),
    "quarantine": ("payload",),
}
_CUSTOMER_FIELD = re.compile(rb'"customer_id":"c_\d{6}"')
_TOKEN = re.compile(
    rb"(?<![A-Za-z0-9._@:+-])" + re.escape(TARGET.encode()) + rb"(?![A-Za-z0-9._@:+-])"
)


class LakeOnlySink(LakeSink):
    """The real sink's Delta half; a set stands in for PostgreSQL's table of event keys.

    The PostgreSQL half would write ``stream_batches`` rows into the session's shared database,
    where the streaming tests look for the newest batch.
    """

    def __init__(self, lake_dir: Path) -> None:
        super().__init__(lake_dir, dsn="", app_id="erasure-test")
        self._seen: set[tuple[str, str]] = set()
        self._fresh: dict[int, set[tuple[str, str]]] = {}

    def _write_postgres(
        self,
        valid: pa.Table,
        batch_id: int,
        table: pa.Table,
        quarantined: pa.Table,
        started: float,
        claimed: pa.Table | None = None,
    ) -> tuple[bool, int, bool]:
        keys = set(
            zip(
                valid.column("tenant_id").to_pylist(),
                valid.column("event_id").to_pylist(),
                strict=True,
            )
        )
        fresh = keys - self._seen
        self._seen |= fresh
        self._fresh[batch_id] = fresh
        return False, len(fresh), False

    def _new_keys(self, batch_id: int) -> set[tuple[str, str]]:
        return self._fresh[batch_id]


def _messages(merchants: list[Merchant], day: date, seed: int, count: int) -> list[OutgoingMessage]:
    rng = random.Random(seed)
    clock_state = [datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC)]

    def clock() -> datetime:
        clock_state[0] += timedelta(seconds=20)
        return clock_state[0]

    faults = FaultShares(
        duplicate=0.05, malformed=0.03, unsupported_version=0.03, tenant_mismatch=0.03
    )
    stream = message_stream(merchants, rng, SessionFactory(rng, v2_share=0.4), faults, clock)
    return list(islice(stream, count))


def _give_sessions_to_target(messages: list[OutgoingMessage], tenant: str, sessions: int) -> None:
    """Rewrite the customer id of ``tenant``'s first ``sessions`` sessions to ``TARGET``.

    The message key is the session id for every kind of message, so duplicates, truncated
    (malformed) copies and other faults of those sessions name the target too.
    """
    chosen: list[str] = []
    for i, message in enumerate(messages):
        if message.tenant_id != tenant:
            continue
        if message.key not in chosen and len(chosen) < sessions:
            chosen.append(message.key)
        if message.key in chosen:
            payload = _CUSTOMER_FIELD.sub(f'"customer_id":"{TARGET}"'.encode(), message.payload)
            messages[i] = message._replace(payload=payload)


def _hand_made(day: int) -> list[OutgoingMessage]:
    """Quarantined messages naming the target (or not quite) that the generator never makes."""
    no_type = {
        "schema_version": 1,
        "event_id": str(uuid.UUID(int=day)),
        "customer": {"customer_id": TARGET},
    }
    return [
        OutgoingMessage(TENANT_A, "h1", orjson.dumps(no_type), "bad", None),
        OutgoingMessage(
            TENANT_A, "h2", b"\xff\xfe not json, customer=" + TARGET.encode() + b";", "bad", None
        ),
        OutgoingMessage(TENANT_A, "h3", f'{{"customer_id":"{LOOK_ALIKE}"}}'.encode(), "bad", None),
        OutgoingMessage(TENANT_B, "h4", f'{{"customer_id":"{TARGET}"}}'.encode(), "bad", None),
    ]


def _raw_batch(messages: list[OutgoingMessage], ledger: int, published: datetime) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "topic": [topic_for(m.tenant_id, TEMPLATE) for m in messages],
            "message_id": [f"{ledger}:{i}:-1" for i in range(len(messages))],
            "publish_time": [published] * len(messages),
            "key": [m.key for m in messages],
            "properties": [[] for _ in messages],
            "value": [m.payload for m in messages],
        },
        schema=ARROW_SCHEMA,
    )


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two days of two tenants through the sink; day one archived. Built once, copied per test."""
    root = tmp_path_factory.mktemp("erasure-lake")
    lake, archive = root / "lake", root / "archive"
    merchants = [merchant_profile(TENANT_A), merchant_profile(TENANT_B)]
    currencies = {m.tenant_id: m.currency for m in merchants}
    sink = LakeOnlySink(lake)
    for batch_id, day in enumerate((DAY_ONE, DAY_TWO)):
        messages = _messages(merchants, day, seed=batch_id + 11, count=700)
        _give_sessions_to_target(messages, TENANT_A, sessions=3)
        _give_sessions_to_target(messages, TENANT_B, sessions=1)
        messages += _hand_made(batch_id)
        ingest = datetime(day.year, day.month, day.day, 23, 0, tzinfo=UTC)
        raw = _raw_batch(messages, ledger=batch_id + 1, published=ingest)
        validated = validate_batch(raw, currencies, TEMPLATE, 256_000, ingest)
        sink.write_batch(pa.Table.from_batches([validated]), batch_id)
    for name in TABLES:
        archive_old_partitions(lake, name, archive, before=DAY_TWO)
    return lake, archive


@pytest.fixture
def lake_copy(built_lake: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the built lake and archive, for a test that erases."""
    lake, archive = tmp_path / "lake", tmp_path / "archive"
    shutil.copytree(built_lake[0], lake)
    shutil.copytree(built_lake[1], archive)
    return lake, archive


@dataclass(frozen=True)
class Rows:
    """One table's rows in the lake and in the archive, with the columns the checks need."""

    lake: list[dict[str, object]]
    archive: list[dict[str, object]]


def _read(lake: Path, archive: Path, name: str) -> Rows:
    columns = [*KEYS[name], *EXTRA[name]]
    in_lake = DeltaTable(str(lake / name)).to_pyarrow_table(columns=columns).to_pylist()
    in_archive: list[dict[str, object]] = []
    for tenant in (TENANT_A, TENANT_B):
        for partition, path in archived_files(archive, name, tenant):
            stored = [c for c in columns if c not in partition]
            for row in pq.ParquetFile(path.path).read(columns=stored).to_pylist():
                in_archive.append({**row, **partition})
    return Rows(in_lake, in_archive)


def _keys(rows: list[dict[str, object]], name: str) -> Counter[tuple[object, ...]]:
    return Counter(tuple(row[k] for k in KEYS[name]) for row in rows)


def _target_events(rows: Rows) -> set[object]:
    return {
        r["event_id"]
        for r in rows.lake + rows.archive
        if r["tenant_id"] == TENANT_A and r["customer_customer_id"] == TARGET
    }


def _doomed(name: str, row: dict[str, object], events: set[object]) -> bool:
    """The reference: whether erasing the target must remove ``row`` (independent of the code)."""
    if name == "silver":
        return row["tenant_id"] == TENANT_A and row["customer_customer_id"] == TARGET
    if name == "quarantine":
        payload = row["payload"]
        assert isinstance(payload, bytes)
        return row["topic_tenant"] == TENANT_A and _TOKEN.search(payload) is not None
    return row["tenant_id"] == TENANT_A and row["event_id"] in events


def test_erasing_a_customer_removes_exactly_their_rows_from_lake_and_archive(
    lake_copy: tuple[Path, Path],
) -> None:
    lake, archive = lake_copy
    before = {name: _read(lake, archive, name) for name in TABLES}
    events = _target_events(before["silver"])
    gone: dict[str, dict[str, Counter[tuple[object, ...]]]] = {}
    for name, rows in before.items():
        gone[name] = {
            "lake": _keys([r for r in rows.lake if _doomed(name, r, events)], name),
            "archive": _keys([r for r in rows.archive if _doomed(name, r, events)], name),
        }
        # The data covers what it must: the target in every table, in the lake and the archive.
        assert gone[name]["lake"] and gone[name]["archive"], f"no target rows in {name}"
    twin = [
        r
        for r in before["silver"].lake
        if r["tenant_id"] == TENANT_B and r["customer_customer_id"] == TARGET
    ]
    assert twin, "tenant B's customer with the same id is missing from the data"

    result = erase_customer_from_lake(lake, archive, TENANT_A, TARGET)

    assert result == LakeErasure(
        silver_rows=gone["silver"]["lake"].total(),
        bronze_rows=gone["bronze"]["lake"].total(),
        event_items_rows=gone["event_items"]["lake"].total(),
        quarantine_rows=gone["quarantine"]["lake"].total(),
        archive_rows=sum(gone[name]["archive"].total() for name in TABLES),
        event_ids=tuple(sorted(str(e) for e in events)),
    )
    for name in TABLES:
        after = _read(lake, archive, name)
        assert _keys(after.lake, name) == _keys(before[name].lake, name) - gone[name]["lake"], name
        assert (
            _keys(after.archive, name) == _keys(before[name].archive, name) - gone[name]["archive"]
        ), name
    payloads = [r["payload"] for r in _read(lake, archive, "quarantine").lake]
    assert sum(1 for p in payloads if isinstance(p, bytes) and LOOK_ALIKE.encode() in p) == 1
    for name in TABLES:
        for manifest in sorted((archive / name / "_manifest").glob("*.json")):
            verify(read_manifest(manifest), archive)

    # delta-rs keeps each delete's predicate in the log: it must not name the customer.
    for name in TABLES:
        for commit in DeltaTable(str(lake / name)).history():
            assert TARGET not in str(commit.get("operationParameters")), name

    again = erase_customer_from_lake(lake, archive, TENANT_A, TARGET)
    assert again == LakeErasure(0, 0, 0, 0, 0, ())


def test_erasure_without_a_lake_or_archive_does_nothing(tmp_path: Path) -> None:
    result = erase_customer_from_lake(tmp_path / "lake", tmp_path / "archive", TENANT_A, TARGET)
    assert result == LakeErasure(0, 0, 0, 0, 0, ())


@pytest.mark.parametrize(
    ("tenant", "customer"), [(TENANT_A, "c_1' OR 'x'='x"), (TENANT_A, ""), ("Bad Tenant", TARGET)]
)
def test_ids_that_could_escape_a_predicate_are_refused(
    built_lake: tuple[Path, Path], tenant: str, customer: str
) -> None:
    lake, archive = built_lake
    version = DeltaTable(str(lake / "silver")).version()
    with pytest.raises(ValueError):
        erase_customer_from_lake(lake, archive, tenant, customer)
    assert DeltaTable(str(lake / "silver")).version() == version


# -- PostgreSQL: the request's steps -----------------------------------------------------------
PG_TENANT = "erase_pg_shop"
EVENT_TIME = datetime(
    2026, 11, 20, 12, 0, tzinfo=UTC
)  # its partitions are made here; no rule of now


def _insert_event(conn: psycopg.Connection, event_id: uuid.UUID, customer: str, items: int) -> None:
    conn.execute(
        "INSERT INTO events (tenant_id, event_id, event_time, schema_version, event_type, "
        "customer_customer_id) VALUES (%s, %s, %s, 1, 'purchase', %s)",
        (PG_TENANT, event_id, EVENT_TIME, customer),
    )
    for line in range(1, items + 1):
        conn.execute(
            "INSERT INTO event_items (tenant_id, event_id, line_number, event_date, event_type, "
            "sku, quantity, unit_price) VALUES (%s, %s, %s, %s, 'purchase', 'sku-1', 1, 9.99)",
            (PG_TENANT, event_id, line, EVENT_TIME.date()),
        )


def _request(conn: psycopg.Connection, customer: str, postgres_rows: int) -> uuid.UUID:
    """What the API records: the customer remembered, and a lake_pending request."""
    request_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO erased_customers (tenant_id, customer_hash) VALUES (%s, %s) "
        "ON CONFLICT DO NOTHING",
        (PG_TENANT, customer_hash(customer)),
    )
    conn.execute(
        "INSERT INTO erasure_requests (request_id, tenant_id, customer_hash, customer_id, status, "
        "postgres_rows) VALUES (%s, %s, %s, %s, 'lake_pending', %s)",
        (request_id, PG_TENANT, customer_hash(customer), customer, postgres_rows),
    )
    return request_id


def test_completing_a_request_sweeps_late_loads_and_forgets_the_customer(
    platform: Settings,
) -> None:
    erased, kept = "c_pg_erased", "c_pg_kept"
    late, lake_only, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with connect(platform) as conn:
        register_tenant(conn, PG_TENANT, "Erase PG Shop", "EUR")
        with conn.transaction():
            for table in ("events", "event_items"):
                ensure_partitions(conn, table, {Month.of(EVENT_TIME.date())})
            request_id = _request(conn, erased, postgres_rows=5)
            # A load that ran after the API's delete brought the customer's event back...
            _insert_event(conn, late, erased, items=2)
            # ...and the item lines of an event only the lake knew (its silver row came later).
            conn.execute(
                "INSERT INTO event_items (tenant_id, event_id, line_number, event_date, "
                "event_type, sku, quantity, unit_price) "
                "VALUES (%s, %s, 1, %s, 'purchase', 'sku-2', 1, 5)",
                (PG_TENANT, lake_only, EVENT_TIME.date()),
            )
            _insert_event(conn, other, kept, items=3)

        target = mark_running(conn, request_id)
        assert (target.tenant_id, target.customer_id) == (PG_TENANT, erased)
        lake = LakeErasure(4, 5, 6, 1, 7, event_ids=(str(lake_only),))
        sweep = complete(conn, request_id, lake)

        assert (sweep.events, sweep.event_items) == (1, 3)
        request = conn.execute(
            "SELECT status, customer_id, postgres_rows, lake_rows, archive_rows, "
            "completed_at IS NOT NULL, customer_hash FROM erasure_requests WHERE request_id = %s",
            (request_id,),
        ).fetchone()
        assert request == ("completed", None, 5 + 4, 16, 7, True, customer_hash(erased))
        remembered = conn.execute(
            "SELECT event_id FROM erased_events WHERE tenant_id = %s ORDER BY event_id",
            (PG_TENANT,),
        ).fetchall()
        assert {r[0] for r in remembered} == {late, lake_only}
        left = conn.execute(
            "SELECT (SELECT count(*) FROM events WHERE tenant_id = %(t)s), "
            "(SELECT count(*) FROM event_items WHERE tenant_id = %(t)s), "
            "(SELECT array_agg(DISTINCT customer_customer_id) FROM events "
            "WHERE tenant_id = %(t)s)",
            {"t": PG_TENANT},
        ).fetchone()
        assert left == (1, 3, [kept])
        conn.commit()

        # A second trigger of the same request has nothing to run; fail() leaves it completed.
        with pytest.raises(ErasureAlreadyCompletedError):
            mark_running(conn, request_id)
        conn.rollback()
        fail(conn, request_id, "late failure")
        status = conn.execute(
            "SELECT status FROM erasure_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        assert status == ("completed",)
        conn.rollback()
        with pytest.raises(UnknownErasureRequestError):
            mark_running(conn, uuid.uuid4())


def test_a_failed_request_keeps_its_customer_and_runs_again(platform: Settings) -> None:
    customer = "c_pg_retry"
    with connect(platform) as conn:
        register_tenant(conn, PG_TENANT, "Erase PG Shop", "EUR")
        with conn.transaction():
            request_id = _request(conn, customer, postgres_rows=0)
        mark_running(conn, request_id)
        fail(conn, request_id, "OSError: disk full")
        row = conn.execute(
            "SELECT status, detail, customer_id FROM erasure_requests WHERE request_id = %s",
            (request_id,),
        ).fetchone()
        assert row == ("failed", "OSError: disk full", customer)
        conn.rollback()
        assert mark_running(conn, request_id).customer_id == customer
        status = conn.execute(
            "SELECT status, detail FROM erasure_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        assert status == ("lake_running", None)
        conn.rollback()


def test_a_request_whose_hash_and_id_disagree_is_refused_before_the_lake(
    platform: Settings,
) -> None:
    with connect(platform) as conn:
        register_tenant(conn, PG_TENANT, "Erase PG Shop", "EUR")
        with conn.transaction():
            request_id = _request(conn, "c_pg_mismatch", postgres_rows=0)
            conn.execute(
                "UPDATE erasure_requests SET customer_hash = %s WHERE request_id = %s",
                (customer_hash("someone_else"), request_id),
            )
        with pytest.raises(ErasureRequestError, match="disagree"):
            mark_running(conn, request_id)
        status = conn.execute(
            "SELECT status FROM erasure_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        assert status == ("lake_pending",)
        conn.rollback()
