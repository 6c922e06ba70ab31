"""What a landing task yields: the description of each file it writes (``FILES_SCHEMA``) and
its output rows (``LANDED_SCHEMA``).

Kept apart from ``jobs.stream.landing`` and ``jobs.stream.delta_files`` so that it imports only
pyarrow: the driver's sink and the tasks share it, and neither needs the other's modules. Where
a task lands (``Landing``) travels in the pickled source class and partitions, so it lives in
``jobs.stream.pulsar_source``, which Spark's planning processes import without pyarrow.
"""

from __future__ import annotations

import pyarrow as pa

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
