"""The lake's Delta tables, in one place: each table's name, partition columns, tenant column and
row key (as ``include/warehouse/tables.py`` is for PostgreSQL).

The stream writes all four, the load reads silver and event_items, the archive moves their old
partitions, erasure rewrites them, and the Airflow Assets name them; each reads this catalog.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LakeTable:
    """One Delta table of the lake."""

    name: str
    # Hive-style partition columns: the tenant column first, a date column last.
    partition_by: tuple[str, ...]
    # The columns that tell one row from another.
    key: tuple[str, ...]

    @property
    def tenant_column(self) -> str:
        """Whose rows these are: a tenant's partitions are ``<tenant_column>=<tenant id>``."""
        return self.partition_by[0]


BRONZE = LakeTable("bronze", ("tenant_id", "event_date"), ("topic", "message_id"))
SILVER = LakeTable("silver", ("tenant_id", "event_date"), ("tenant_id", "event_id"))
EVENT_ITEMS = LakeTable(
    "event_items", ("tenant_id", "event_date"), ("tenant_id", "event_id", "line_number")
)
# Quarantined messages belong to the tenant of the topic they came on (a payload may name none).
QUARANTINE = LakeTable("quarantine", ("topic_tenant", "ingest_date"), ("topic", "message_id"))

LAKE_TABLES: tuple[LakeTable, ...] = (BRONZE, SILVER, EVENT_ITEMS, QUARANTINE)
BY_NAME: dict[str, LakeTable] = {table.name: table for table in LAKE_TABLES}
