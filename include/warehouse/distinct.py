"""Exact distinct counts as roaring bitmaps of small integer ids (issue #16).

Every session and customer of a tenant has an id in first-seen order (``distinct_ids``). For
each kind (``session``, ``purchasing``, ``customer``) ``distinct_pieces`` keeps the ids active
in aligned blocks of minutes, one row per (tenant, level, start minute, kind) with the block's
cardinality and its serialized bitmap (migration V0007). The distinct count of any
minute-aligned window is the cardinality of the union of the few blocks that tile it
(:func:`decompose`); a window that is one block reads only its stored cardinality.

Exactness:

- **loads** (late events and replays included) only add ids: :func:`apply_load` ORs the
  staged events' minute bitmaps into every block covering their minutes. OR is idempotent,
  so a replay or a rerun changes nothing.
- **erasure** removes ids: :func:`repair` recomputes, for the affected keys only, their
  membership of every block that covered a deleted event, from the events that remain.
- :func:`rebuild` derives every block from ``events`` alone: the bench's initial build and the
  test's oracle that stored pieces equal what the events imply.

The module is pure except for the ``*_sync`` I/O helpers (psycopg) and the SQL constants; the
API's asyncpg twin lives in :mod:`api.distinct`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from pyroaring import BitMap

# Block sizes in minutes, one per level; each divides the next, so blocks nest.
LEVELS: tuple[int, ...] = (1, 15, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360)
TOP = len(LEVELS) - 1
# Hours that start 15, 30 or 45 minutes past a UTC hour (the hours of zones such as
# Asia/Kolkata, Asia/Kathmandu, Australia/Adelaide): levels after the nested ones, so an hour
# bucket in those zones is one block too.
SHIFTED: dict[int, int] = {TOP + 1: 15, TOP + 2: 30, TOP + 3: 45}
PHASE_LEVEL = {phase: level for level, phase in SHIFTED.items()}
# Days starting at each whole UTC hour (local days of whole-hour zones outside DST changes):
# a day bucket in those zones is one block.
DAY = 1440
SHIFTED_DAYS: dict[int, int] = {TOP + 4 + hour: hour * 60 for hour in range(24)}
DAY_PHASE_LEVEL = {phase: level for level, phase in SHIFTED_DAYS.items()}
MAX_LEVEL = TOP + 4 + 23
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
EPOCH_MINUTE = int(EPOCH.timestamp()) // 60
KINDS = ("session", "purchasing", "customer")
# Which id space each bitmap kind draws from.
ID_KIND = {"session": "session", "purchasing": "session", "customer": "customer"}

PieceKey = tuple[str, int, int]  # (kind, level, start_minute)


def minute_of(moment: datetime) -> int:
    """Minutes since :data:`EPOCH` of a whole-minute instant (floor for any other)."""
    return int(moment.timestamp()) // 60 - EPOCH_MINUTE


def size_of(level: int) -> int:
    """Minutes of a block of ``level``."""
    if level in SHIFTED:
        return 60
    return DAY if level in SHIFTED_DAYS else LEVELS[level]


def phase_of(level: int) -> int:
    """Minutes past the nested grid at which blocks of ``level`` start."""
    return SHIFTED.get(level, SHIFTED_DAYS.get(level, 0))


def decompose(start: int, end: int) -> list[tuple[int, int]]:
    """The fewest aligned blocks ``(level, start_minute)`` that tile minutes ``start..end``.

    An hour starting a quarter, half or three quarters past is its shifted-hour block;
    otherwise greedy from the left: the largest nested block that starts here and ends within
    the window. Any window up to 400 days takes at most a few dozen blocks."""
    if end - start == 60 and start % 60 in PHASE_LEVEL:
        return [(PHASE_LEVEL[start % 60], start)]
    if end - start == DAY and start % DAY in DAY_PHASE_LEVEL:
        return [(DAY_PHASE_LEVEL[start % DAY], start)]
    out: list[tuple[int, int]] = []
    at = start
    while at < end:
        for level in range(TOP, -1, -1):
            size = LEVELS[level]
            if at % size == 0 and at + size <= end:
                out.append((level, at))
                at += size
                break
    return out


def covering(minute: int) -> list[tuple[int, int]]:
    """Every block ``(level, start_minute)`` that holds ``minute``, one per level."""
    nested = [(level, minute - minute % size) for level, size in enumerate(LEVELS)]
    hours = [(level, minute - (minute - phase) % 60) for level, phase in SHIFTED.items()]
    days = [(level, minute - (minute - phase) % DAY) for level, phase in SHIFTED_DAYS.items()]
    return nested + hours + days


def roll_up(minutes: Mapping[tuple[str, int], BitMap]) -> dict[PieceKey, BitMap]:
    """Per (kind, minute) bitmaps -> the bitmap of every block at every level they touch."""
    out: dict[PieceKey, BitMap] = {}
    for (kind, minute), ids in minutes.items():
        for level, start in covering(minute):
            key = (kind, level, start)
            found = out.get(key)
            if found is None:
                out[key] = BitMap(ids)
            else:
                found |= ids
    return out


def serialize(bitmap: BitMap) -> bytes:
    """A bitmap's stored bytes (run containers where they are smaller)."""
    bitmap.run_optimize()
    return bytes(bitmap.serialize())


def deserialize(data: bytes) -> BitMap:
    """The bitmap of stored bytes."""
    return BitMap.deserialize(data)


def union_cardinality(bitmaps: list[BitMap]) -> int:
    """Cardinality of the union of ``bitmaps``."""
    if not bitmaps:
        return 0
    if len(bitmaps) == 1:
        return len(bitmaps[0])
    if len(bitmaps) == 2:
        return int(bitmaps[0].union_cardinality(bitmaps[1]))
    return len(BitMap.union(*bitmaps))


def minute_bitmaps(rows: Iterable[tuple[str, int, list[int]]]) -> dict[tuple[str, int], BitMap]:
    """Rows (kind, minute, ids) of :data:`MINUTE_IDS_SQL`-like queries as bitmaps."""
    return {(kind, minute): BitMap(ids) for kind, minute, ids in rows}


# --- SQL -------------------------------------------------------------------------------------

MINUTE_SQL = f"(floor(extract(epoch FROM {{column}}) / 60)::bigint - {EPOCH_MINUTE})::integer"


def minute_expr(column: str) -> str:
    """SQL for the minute index (minutes since 2000-01-01 UTC) of timestamptz ``column``."""
    return MINUTE_SQL.format(column=column)


# New sessions and customers of the staged events (alias ``s``, filtered by ``{keep}``) get
# ids in first-seen order, per tenant and kind, in one statement.
ASSIGN_IDS = """
WITH seen AS (
    SELECT s.tenant_id, 'session' AS kind, s.session_id AS key, min(s.event_time) AS first_seen
    FROM {source} s WHERE s.session_id IS NOT NULL AND {keep} GROUP BY 1, 3
    UNION ALL
    SELECT s.tenant_id, 'customer', s.customer_customer_id, min(s.event_time)
    FROM {source} s WHERE s.customer_customer_id IS NOT NULL AND {keep} GROUP BY 1, 3
), fresh AS (
    SELECT seen.*,
           row_number() OVER (PARTITION BY tenant_id, kind ORDER BY first_seen, key) - 1 AS rn,
           count(*) OVER (PARTITION BY tenant_id, kind) AS n
    FROM seen
    WHERE NOT EXISTS (SELECT 1 FROM distinct_ids d
                      WHERE d.tenant_id = seen.tenant_id AND d.kind = seen.kind
                        AND d.key = seen.key)
), bumped AS (
    INSERT INTO distinct_id_next AS x (tenant_id, kind, next_id)
    SELECT tenant_id, kind, max(n) FROM fresh GROUP BY 1, 2
    ON CONFLICT (tenant_id, kind) DO UPDATE SET next_id = x.next_id + excluded.next_id
    RETURNING tenant_id, kind, next_id
)
INSERT INTO distinct_ids (tenant_id, kind, key, id)
SELECT f.tenant_id, f.kind, f.key, (b.next_id - f.n + f.rn)::integer
FROM fresh f JOIN bumped b USING (tenant_id, kind)
"""

# Per tenant, kind and minute, the ids active then among the events of ``{source}`` (alias
# ``s``) that pass ``{keep}``.
MINUTE_IDS = f"""
SELECT s.tenant_id, k.kind, {minute_expr("s.event_time")} AS minute, array_agg(DISTINCT d.id)
FROM {{source}} s
CROSS JOIN LATERAL (VALUES ('session', 'session', s.session_id),
                           ('purchasing', 'session',
                            CASE WHEN s.event_type = 'purchase' THEN s.session_id END),
                           ('customer', 'customer', s.customer_customer_id)) AS k(kind, space, key)
JOIN distinct_ids d ON d.tenant_id = s.tenant_id AND d.kind = k.space AND d.key = k.key
WHERE k.key IS NOT NULL AND {{keep}}
GROUP BY 1, 2, 3
"""

_READ_PIECES = """
SELECT p.kind, p.level, p.start_minute, p.bitmap
FROM distinct_pieces p
JOIN unnest($2::text[], $3::smallint[], $4::integer[]) AS w(kind, level, start_minute)
  ON p.kind = w.kind AND p.level = w.level AND p.start_minute = w.start_minute
WHERE p.tenant_id = $1
FOR UPDATE OF p
"""
_UPSERT_PIECES = """
INSERT INTO distinct_pieces AS p (tenant_id, level, start_minute, kind, cardinality, bitmap)
SELECT $1, level, start_minute, kind, cardinality, bitmap
FROM unnest($2::smallint[], $3::integer[], $4::text[], $5::integer[], $6::bytea[])
     AS w(level, start_minute, kind, cardinality, bitmap)
ON CONFLICT (tenant_id, level, start_minute, kind)
DO UPDATE SET cardinality = excluded.cardinality, bitmap = excluded.bitmap
"""
_DELETE_PIECES = """
DELETE FROM distinct_pieces p
USING unnest($2::text[], $3::smallint[], $4::integer[]) AS w(kind, level, start_minute)
WHERE p.tenant_id = $1 AND p.kind = w.kind AND p.level = w.level
  AND p.start_minute = w.start_minute
"""
# One tenant's writers of pieces take turns (a load and an erasure may overlap).
LOCK = "SELECT pg_advisory_xact_lock(hashtext('distinct_pieces:' || $1))"
FORGET_CUSTOMERS = (
    "DELETE FROM distinct_ids WHERE tenant_id = $1 AND kind = 'customer' AND key = ANY ($2::text[])"
)
READ_PIECES = _READ_PIECES
UPSERT_PIECES = _UPSERT_PIECES
DELETE_PIECES = _DELETE_PIECES


def psycopg_sql(text: str) -> str:
    """``$n`` placeholders (asyncpg's) as psycopg's ``%(pn)s``, so one SQL text serves both."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", text)


def run_sync(conn: psycopg.Connection[Any], text: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run ``$n``-style ``text`` with ``args`` on psycopg; its rows (none for a command)."""
    cursor = conn.execute(
        psycopg_sql(text),
        {f"p{i}": arg for i, arg in enumerate(args, 1)},
    )
    return cursor.fetchall() if cursor.description else []


def read_args(tenant: str, keys: list[PieceKey]) -> tuple[Any, ...]:
    """Arguments of :data:`READ_PIECES` and :data:`DELETE_PIECES`."""
    return (tenant, [k for k, _, _ in keys], [lv for _, lv, _ in keys], [s for _, _, s in keys])


def write_args(
    tenant: str, pieces: Mapping[PieceKey, BitMap]
) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
    """Arguments of :data:`UPSERT_PIECES` (non-empty pieces) and :data:`DELETE_PIECES`
    (emptied ones); None where there is nothing to do."""
    full = [(k, b) for k, b in pieces.items() if b]
    empty = [k for k, b in pieces.items() if not b]
    upsert = (
        (
            tenant,
            [lv for (_, lv, _), _ in full],
            [s for (_, _, s), _ in full],
            [k for (k, _, _), _ in full],
            [len(b) for _, b in full],
            [serialize(b) for _, b in full],
        )
        if full
        else None
    )
    return upsert, (read_args(tenant, empty) if empty else None)


def read_pieces_sync(
    conn: psycopg.Connection[Any], tenant: str, keys: Iterable[PieceKey]
) -> dict[PieceKey, BitMap]:
    """The stored bitmaps of ``keys`` (locked until commit); absent ones are missing."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = run_sync(conn, READ_PIECES, *read_args(tenant, wanted))
    return {(kind, level, start): deserialize(data) for kind, level, start, data in rows}


def write_pieces_sync(
    conn: psycopg.Connection[Any], tenant: str, pieces: Mapping[PieceKey, BitMap]
) -> None:
    """Store ``pieces``: upsert the non-empty ones, delete the empty ones."""
    upsert, delete = write_args(tenant, pieces)
    if upsert is not None:
        run_sync(conn, UPSERT_PIECES, *upsert)
    if delete is not None:
        run_sync(conn, DELETE_PIECES, *delete)


def _lock(conn: psycopg.Connection[Any], tenant: str) -> None:
    run_sync(conn, LOCK, tenant)


def merge_added(
    stored: Mapping[PieceKey, BitMap], added: Mapping[PieceKey, BitMap]
) -> dict[PieceKey, BitMap]:
    """The pieces after adding ``added`` to ``stored``: only those that changed."""
    out: dict[PieceKey, BitMap] = {}
    for key, ids in added.items():
        old = stored.get(key)
        if old is None:
            out[key] = BitMap(ids)
        elif not ids.issubset(old):
            out[key] = old | ids
    return out


def apply_load(conn: psycopg.Connection[Any], keep: sql.Composable) -> int:
    """In the load's transaction: ids for the staged events' new keys, and their activity
    ORed into every block covering their minutes. Returns the pieces written.

    ``keep`` is the loader's condition on staged rows (alias ``s``: erased customers are
    skipped), the same one its ``INSERT INTO events`` uses."""
    source = sql.Identifier("load_staging_events")
    conn.execute(sql.SQL(ASSIGN_IDS).format(source=source, keep=keep))
    rows = conn.execute(sql.SQL(MINUTE_IDS).format(source=source, keep=keep)).fetchall()
    by_tenant: dict[str, list[tuple[str, int, list[int]]]] = defaultdict(list)
    for tenant, kind, minute, ids in rows:
        by_tenant[tenant].append((kind, minute, ids))
    written = 0
    for tenant in sorted(by_tenant):
        _lock(conn, tenant)
        added = roll_up(minute_bitmaps(by_tenant[tenant]))
        changed = merge_added(read_pieces_sync(conn, tenant, added), added)
        write_pieces_sync(conn, tenant, changed)
        written += len(changed)
    return written


def repaired(
    stored: Mapping[PieceKey, BitMap],
    affected: Mapping[str, BitMap],
    remaining: Mapping[PieceKey, BitMap],
) -> dict[PieceKey, BitMap]:
    """Each stored piece without the ``affected`` ids of its id space, plus the affected ids
    that still have events in it (``remaining``)."""
    out: dict[PieceKey, BitMap] = {}
    for key, old in stored.items():
        gone = affected.get(ID_KIND[key[0]])
        new = old - gone if gone is not None else BitMap(old)
        back = remaining.get(key)
        if back is not None:
            new |= back
        if new != old:
            out[key] = new
    return out


# The ids of given sessions and customers of one tenant.
IDS_OF = """
SELECT kind, array_agg(id) FROM distinct_ids
WHERE tenant_id = $1 AND ((kind = 'session' AND key = ANY ($2::text[]))
                          OR (kind = 'customer' AND key = ANY ($3::text[])))
GROUP BY kind
"""
# Remaining activity of given sessions and customers within given minute windows.
REMAINING = f"""
SELECT 'x', k.kind, {minute_expr("s.event_time")}, array_agg(DISTINCT d.id)
FROM events s
JOIN unnest($2::timestamptz[], $3::timestamptz[]) AS w(a, b)
  ON s.event_time >= w.a AND s.event_time < w.b
CROSS JOIN LATERAL (VALUES ('session', 'session', s.session_id),
                           ('purchasing', 'session',
                            CASE WHEN s.event_type = 'purchase' THEN s.session_id END),
                           ('customer', 'customer', s.customer_customer_id)) AS k(kind, space, key)
JOIN distinct_ids d ON d.tenant_id = s.tenant_id AND d.kind = k.space AND d.key = k.key
WHERE s.tenant_id = $1 AND k.key IS NOT NULL
  AND ((k.space = 'session' AND k.key = ANY ($4::text[]))
       OR (k.space = 'customer' AND k.key = ANY ($5::text[])))
GROUP BY 2, 3
"""


def remaining_args(
    tenant: str, windows: list[tuple[int, int]], sessions: list[str], customers: list[str]
) -> tuple[Any, ...]:
    """Arguments of :data:`REMAINING`."""
    return (
        tenant,
        [at_minute(a) for a, _ in windows],
        [at_minute(b) for _, b in windows],
        sessions,
        customers,
    )


def top_windows(minutes: Iterable[int]) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` in minutes holding every block that holds any of ``minutes``:
    their top-level blocks, a day wider on each side for the shifted hours and days."""
    size = LEVELS[TOP]
    starts = sorted({m - m % size for m in minutes})
    return [(s - DAY, s + size + DAY) for s in starts]


def at_minute(minute: int) -> datetime:
    """The instant of minute index ``minute``."""
    return datetime.fromtimestamp((minute + EPOCH_MINUTE) * 60, UTC)


def repair_sync(
    conn: psycopg.Connection[Any],
    tenant: str,
    sessions: list[str],
    customers: list[str],
    minutes: Iterable[int],
    *,
    forget_customers: bool = True,
) -> int:
    """After events of ``sessions``/``customers`` were deleted at ``minutes``: correct every
    block covering those minutes from the events that remain. Returns the pieces written.

    With ``forget_customers`` the customers' id rows go too (an erased customer's id must not
    stay linked to the customer id)."""
    touched = sorted(set(minutes))
    if not touched or not (sessions or customers):
        return 0
    _lock(conn, tenant)
    ids = {
        space: BitMap(found) for space, found in run_sync(conn, IDS_OF, tenant, sessions, customers)
    }
    keys = {(kind, level, start) for m in touched for level, start in covering(m) for kind in KINDS}
    stored = read_pieces_sync(conn, tenant, keys)
    windows = top_windows(touched)
    rows = run_sync(conn, REMAINING, *remaining_args(tenant, windows, sessions, customers))
    remaining = roll_up(minute_bitmaps((kind, minute, found) for _, kind, minute, found in rows))
    changed = repaired(stored, ids, {k: v for k, v in remaining.items() if k in keys})
    write_pieces_sync(conn, tenant, changed)
    if forget_customers and customers:
        run_sync(conn, FORGET_CUSTOMERS, tenant, customers)
    return len(changed)


def rebuild_pieces(conn: psycopg.Connection[Any], tenant: str) -> dict[PieceKey, BitMap]:
    """Every block of ``tenant`` derived from ``events`` and ``distinct_ids`` alone."""
    rows = conn.execute(
        sql.SQL(MINUTE_IDS).format(
            source=sql.Identifier("events"),
            keep=sql.SQL("s.tenant_id = {}").format(sql.Literal(tenant)),
        )
    ).fetchall()
    return roll_up(minute_bitmaps((kind, minute, ids) for _, kind, minute, ids in rows))


def rebuild(conn: psycopg.Connection[Any], tenant: str) -> int:
    """Assign ids to every key of ``tenant``'s events and replace all its pieces by what the
    events imply (initial build, or a repair of last resort). Returns the pieces written."""
    _lock(conn, tenant)
    keep = sql.SQL("s.tenant_id = {}").format(sql.Literal(tenant))
    conn.execute(sql.SQL(ASSIGN_IDS).format(source=sql.Identifier("events"), keep=keep))
    pieces = rebuild_pieces(conn, tenant)
    conn.execute("DELETE FROM distinct_pieces WHERE tenant_id = %s", (tenant,))
    write_pieces_sync(conn, tenant, pieces)
    return len(pieces)


def stored_pieces(conn: psycopg.Connection[Any], tenant: str) -> dict[PieceKey, BitMap]:
    """Every stored block of ``tenant``."""
    rows = conn.execute(
        "SELECT kind, level, start_minute, cardinality, bitmap FROM distinct_pieces "
        "WHERE tenant_id = %s",
        (tenant,),
    ).fetchall()
    out = {}
    for kind, level, start, cardinality, data in rows:
        bitmap = deserialize(data)
        if len(bitmap) != cardinality:
            raise AssertionError(f"piece {(kind, level, start)}: cardinality {cardinality}")
        out[(kind, level, start)] = bitmap
    return out
