from __future__ import annotations

from pathlib import Path

import pytest

from include.sql.migrate import MIGRATIONS_DIR, MigrationError, discover


def test_shipped_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in discover(MIGRATIONS_DIR)]
    assert versions == list(range(1, len(versions) + 1))


def test_misnamed_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_tenants.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"V0001__name\.sql"):
        discover(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "V0001__a.sql").write_text("SELECT 1;")
    (tmp_path / "V0001__b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="share version 1"):
        discover(tmp_path)
