"""What every DAG shares: default arguments, the lake's Assets, where the batch work runs.

Imported by ``dags/`` only. Nothing here touches a database or a connection: DAG files are
parsed often, and parsing must stay free of I/O.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Asset

from include.lake import tables as lake_tables

REPO_ROOT = Path(__file__).resolve().parents[1]
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}

# The lake's tables and the warehouse's, as Airflow Assets (data-aware scheduling).
SILVER = Asset(f"lakehouse://lake/{lake_tables.SILVER.name}", group="lake")
EVENT_ITEMS_LAKE = Asset(f"lakehouse://lake/{lake_tables.EVENT_ITEMS.name}", group="lake")
EVENTS_TABLE = Asset("lakehouse://postgres/events", group="warehouse")
EVENT_ITEMS_TABLE = Asset("lakehouse://postgres/event_items", group="warehouse")


# The Spark provider's Spark Connect connection the batch work runs on (defined by environment,
# AIRFLOW_CONN_SPARK_CONNECT_DEFAULT, like the platform's other connections).
SPARK_CONNECT_CONN_ID = "spark_connect_default"


def spark_connect_url() -> str:
    """The ``sc://`` URL of the batch work's Spark Connect server (reads the connection: call
    it in a task, never while a DAG file is parsed)."""
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

    return SparkConnectHook(SPARK_CONNECT_CONN_ID).get_connection_url()
