"""Bytes each tenant occupies in the lake and the archive (for cost allocation)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from include.lake.archive import PARTITIONING


def stored_bytes(lake_dir: Path, archive_dir: Path) -> dict[str, dict[str, int]]:
    """tenant -> store (``lake/<table>`` or ``archive/<table>``) -> bytes of live data files.

    Lake figures count the files of each Delta table's current snapshot (files removed but not
    yet vacuumed are not billed); archive figures count the Parquet files on disk.
    """
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for table, columns in PARTITIONING.items():
        tenant_column = columns[0]
        location = lake_dir / table
        if DeltaTable.is_deltatable(str(location)):
            actions = pa.table(DeltaTable(str(location)).get_add_actions(flatten=True))
            tenants = actions.column(f"partition.{tenant_column}").to_pylist()
            sizes = actions.column("size_bytes").to_pylist()
            for tenant, size in zip(tenants, sizes, strict=True):
                usage[str(tenant)][f"lake/{table}"] += int(size)
        for folder in (archive_dir / table).glob(f"{tenant_column}=*"):
            tenant = folder.name.split("=", 1)[1]
            total = sum(path.stat().st_size for path in folder.rglob("*.parquet"))
            usage[tenant][f"archive/{table}"] += total
    return {tenant: dict(stores) for tenant, stores in usage.items()}
