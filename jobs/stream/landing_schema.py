"""What a landing task is given and what it yields: ``Landing`` (where it writes), the
description of each file it writes (``FILES_SCHEMA``) and its output rows (``LANDED_SCHEMA``).

Kept apart from ``jobs.stream.landing`` and ``jobs.stream.delta_files`` so that it imports
only pyarrow: the registered source class carries a ``Landing``, and Spark unpickles that class
in its planning processes (``create_data_source``, ``plan_data_source_read``, the streaming
source runner), which never land anything. Through ``jobs.stream.landing`` each of them imported
deltalake, psycopg, pandas and pydantic: about 80 MiB per process, alive for the query's first
minute, while the first backlog drains (issue #14's memory figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from include.lake.storage import Location

FILES_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("partition_values", pa.string()),
        ("num_records", pa.int64()),
        ("stats", pa.string()),
        ("schema", pa.binary()),
    ]
)
FILE_PREFIX = "file_"
SUMMARY_COLUMN = "summary"
# What a landed partition yields: one row per file it wrote (``file_sure`` tells sure files
# from maybe files), then one row whose ``summary`` is its summary rows as one Arrow IPC stream.
# One value per task instead of a row per message: the JVM copies bytes instead of converting
# every message's columns to its rows and back (0.8 s of JVM CPU per 20,000 events before).
LANDED_SCHEMA = pa.schema(
    [pa.field(FILE_PREFIX + f.name, f.type, nullable=True) for f in FILES_SCHEMA]
    + [pa.field(FILE_PREFIX + "sure", pa.bool_()), pa.field(SUMMARY_COLUMN, pa.binary())]
)


@dataclass(frozen=True)
class Landing:
    """Where a partition task lands its rows: the lake, and the PostgreSQL database whose
    ``stream_event_keys`` it looks its keys up in. Travels inside the pickled partition."""

    lake: Location
    dsn: str = field(repr=False)
