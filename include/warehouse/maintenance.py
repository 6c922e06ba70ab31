"""PostgreSQL upkeep of the analytics tables: VACUUM (ANALYZE), partition rotation, sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql

from include.warehouse.partitions import (
    Month,
    drop_partitions_before,
    ensure_partitions,
)
from include.warehouse.tables import ANALYTICS_TABLES


@dataclass(frozen=True)
class Rotation:
    """Partitions one rotation created and dropped, per table."""

    created: dict[str, list[str]]
    dropped: dict[str, list[str]]


def months_back(month: Month, count: int) -> Month:
    """The month ``count`` months before ``month``."""
    index = month.year * 12 + (month.month - 1) - count
    return Month(index // 12, index % 12 + 1)


def rotate_partitions(
    conn: psycopg.Connection, today: date, ahead_months: int, retention_months: int
) -> Rotation:
    """Create this month's and the next ``ahead_months`` partitions; drop those whose whole
    month ended more than ``retention_months`` months ago."""
    this_month = Month.of(today)
    coming = {this_month}
    month = this_month
    for _ in range(ahead_months):
        month = month.next()
        coming.add(month)
    keep_from = months_back(this_month, retention_months)
    created, dropped = {}, {}
    with conn.transaction():
        for table in ANALYTICS_TABLES:
            created[table.name] = ensure_partitions(conn, table.name, coming)
            dropped[table.name] = drop_partitions_before(conn, table.name, keep_from)
    return Rotation(created, dropped)


def vacuum_analyze(dsn: str) -> list[str]:
    """``VACUUM (ANALYZE)`` the analytics tables (outside a transaction)."""
    done = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in [table.name for table in ANALYTICS_TABLES]:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(name)))
            done.append(name)
    return done


@dataclass(frozen=True)
class RelationSize:
    """Bytes of one table (or partition) and of its indexes."""

    name: str
    table_bytes: int
    index_bytes: int
    rows_estimate: int


def size_report(conn: psycopg.Connection) -> list[RelationSize]:
    """Sizes of the analytics tables' partitions, largest first."""
    rows = conn.execute(
        """
        SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid),
               greatest(c.reltuples, 0)::bigint
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = ANY(%s)
        ORDER BY pg_total_relation_size(c.oid) DESC
        """,
        ([t.name for t in ANALYTICS_TABLES],),
    ).fetchall()
    return [RelationSize(str(n), int(t), int(i), int(r)) for n, t, i, r in rows]
