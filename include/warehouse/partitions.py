"""Monthly range partitions of the analytics tables: create what is needed, drop what is old."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import psycopg
from psycopg import sql

_PARTITION = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})(?P<month>\d{2})$")


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month."""

    year: int
    month: int

    @classmethod
    def of(cls, day: date) -> Month:
        """The month ``day`` is in."""
        return cls(day.year, day.month)

    def next(self) -> Month:
        """The following month."""
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def first_day(self) -> date:
        """Its first day."""
        return date(self.year, self.month, 1)


def partition_name(table: str, month: Month) -> str:
    """``events_p202611`` for November 2026 of ``events``."""
    return f"{table}_p{month.year:04d}{month.month:02d}"


def ensure_partitions(conn: psycopg.Connection, table: str, months: set[Month]) -> list[str]:
    """Create the missing monthly partitions of ``table``; return the ones created."""
    existing = set(partitions_of(conn, table))
    created = []
    for month in sorted(months):
        name = partition_name(table, month)
        if name in existing:
            continue
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                sql.Identifier(name),
                sql.Identifier(table),
                sql.Literal(f"{month.first_day().isoformat()} 00:00:00+00"),
                sql.Literal(f"{month.next().first_day().isoformat()} 00:00:00+00"),
            )
        )
        created.append(name)
    return created


def partitions_of(conn: psycopg.Connection, table: str) -> dict[str, Month]:
    """The monthly partitions of ``table`` by name."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s",
        (table,),
    ).fetchall()
    out = {}
    for (name,) in rows:
        match = _PARTITION.match(name)
        if match and match["table"] == table:
            out[name] = Month(int(match["year"]), int(match["month"]))
    return out


def drop_partitions_before(conn: psycopg.Connection, table: str, keep_from: Month) -> list[str]:
    """Drop the partitions of ``table`` for months before ``keep_from``; return their names."""
    dropped = []
    for name, month in sorted(partitions_of(conn, table).items()):
        if month < keep_from:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
            dropped.append(name)
    return dropped
