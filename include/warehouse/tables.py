"""The analytics tables, their lake sources and their columns, defined once.

Column lists derive from the event contract (``include.events.flatten``), so a contract change
shows up here and in the test that compares them with the migrated tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from include.events.flatten import flat_columns, item_fields
from include.lake import tables as lake_tables


@dataclass(frozen=True)
class AnalyticsTable:
    """A PostgreSQL table loaded from a Delta table."""

    name: str
    source: str  # the Delta table under the lake directory
    columns: tuple[str, ...]
    key: tuple[str, ...]
    partition_column: str  # range-partitioned by month of this column
    json_columns: tuple[str, ...] = ()  # map columns, stored as jsonb

    @property
    def staging(self) -> str:
        """The unlogged table a load stages rows in."""
        return f"load_staging_{self.name}"


EVENTS = AnalyticsTable(
    name="events",
    source=lake_tables.SILVER.name,
    columns=(
        *(c.name for c in flat_columns()),
        "item_count",
        "topic",
        "message_id",
        "publish_time",
        "ingest_time",
    ),
    key=("tenant_id", "event_id", "event_time"),
    partition_column="event_time",
    json_columns=("ml_context_model_scores",),
)

EVENT_ITEMS = AnalyticsTable(
    name="event_items",
    source=lake_tables.EVENT_ITEMS.name,
    columns=(
        "tenant_id",
        "event_id",
        "line_number",
        "event_date",
        "event_type",
        *(f.name for f in item_fields()),
    ),
    key=("tenant_id", "event_id", "line_number", "event_date"),
    partition_column="event_date",
)

ANALYTICS_TABLES = (EVENTS, EVENT_ITEMS)


def table_named(name: str) -> AnalyticsTable:
    """The analytics table called ``name``."""
    for table in ANALYTICS_TABLES:
        if table.name == name:
            return table
    raise KeyError(f"no analytics table {name!r}; known: {[t.name for t in ANALYTICS_TABLES]}")
