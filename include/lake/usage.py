"""Bytes each tenant occupies in the lake and the archive (for cost allocation)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from include.lake.storage import Location, as_location, partition_values
from include.lake.tables import BY_NAME


def stored_bytes(lake: Location | Path, archive: Location | Path) -> dict[str, dict[str, int]]:
    """tenant -> store (``lake/<table>`` or ``archive/<table>``) -> bytes of live data files.

    Lake figures count the files of each Delta table's current snapshot (files removed but not
    yet vacuumed are not billed); archive figures count the Parquet files stored.
    """
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for table, spec in BY_NAME.items():
        tenant_column = spec.tenant_column
        location = as_location(lake) / table
        if location.is_delta_table():
            actions = pa.table(location.delta_table().get_add_actions(flatten=True))
            tenants = actions.column(f"partition.{tenant_column}").to_pylist()
            sizes = actions.column("size_bytes").to_pylist()
            for tenant, size in zip(tenants, sizes, strict=True):
                usage[str(tenant)][f"lake/{table}"] += int(size)
        for relative, size in (as_location(archive) / table).files(".parquet"):
            tenant = partition_values(relative).get(tenant_column)
            if tenant is not None:
                usage[tenant][f"archive/{table}"] += size
    return {tenant: dict(stores) for tenant, stores in usage.items()}
