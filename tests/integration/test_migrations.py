from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from include.db import connect
from include.settings import Settings
from include.sql.migrate import MigrationError, apply_migrations, discover


def _schema_snapshot(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
    ).fetchall()
    constraints = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    ).fetchall()
    return [*columns, *constraints, *indexes]


@pytest.fixture
def scratch_db(platform: Settings) -> Iterator[Settings]:
    """A fresh, empty database on the shared server."""
    name = "scratch_migrations"
    with connect(platform, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield platform.model_copy(update={"pg_database": name})
    with connect(platform, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrations_applied_twice_change_nothing(scratch_db: Settings) -> None:
    with connect(scratch_db) as conn:
        first = apply_migrations(conn)
        after_first = _schema_snapshot(conn)
        second = apply_migrations(conn)
        after_second = _schema_snapshot(conn)
        recorded = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert first == [m.version for m in discover()]
    assert second == []
    assert after_first == after_second
    assert [r[0] for r in recorded] == first
    assert any(row[0] == "tenants" for row in after_first)


def test_an_edited_applied_migration_is_refused(scratch_db: Settings, tmp_path: Path) -> None:
    (tmp_path / "V0001__things.sql").write_text("CREATE TABLE things (id int);")
    with connect(scratch_db) as conn:
        assert apply_migrations(conn, tmp_path) == [1]
    (tmp_path / "V0001__things.sql").write_text("CREATE TABLE things (id bigint);")
    with connect(scratch_db) as conn, pytest.raises(MigrationError, match="changed after"):
        apply_migrations(conn, tmp_path)


def test_a_failing_migration_leaves_nothing_behind(scratch_db: Settings, tmp_path: Path) -> None:
    (tmp_path / "V0001__ok.sql").write_text("CREATE TABLE ok_table (id int);")
    (tmp_path / "V0002__broken.sql").write_text("CREATE TABLE half (id int); SELECT nonsense;")
    with connect(scratch_db) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn):
            apply_migrations(conn, tmp_path)
        conn.rollback()
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()]
    assert "ok_table" in tables and "half" not in tables
    assert versions == [1]
