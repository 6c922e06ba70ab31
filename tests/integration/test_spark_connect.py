"""Loads as clients of the platform's Spark Connect server, the supervised program `make run`
starts: exact results against the lake, a server killed in the middle of a load, and the
server coming back under supervision.

Each load runs in its own process, as in an Airflow task (and because a process that runs a
classic Spark session, as these tests do for the stream, cannot open a remote one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

from include.db import connect
from include.embedded import supervisor
from include.embedded.net import wait_for_port
from include.embedded.paths import StatePaths
from include.settings import Settings
from include.tenants import topic_for
from jobs.load.job import PROCESS_TITLE
from tests.integration.stream_fixtures import (
    Reference,
    publish_mix,
    register,
    run_stream_until_consumed,
)
from tests.services import settings_env

JOB = Path(__file__).resolve().parents[2] / "jobs" / "load" / "job.py"
TENANTS = ["connect_alpha", "connect_beta"]
KILL_TENANTS = ["connect_gamma", "connect_delta"]


def _server_pid(paths: StatePaths) -> int | None:
    for info in supervisor.process_info(paths):
        if info.name == supervisor.SPARK_CONNECT and info.state == "RUNNING":
            return info.pid
    return None


def _wait_serving(settings: Settings, paths: StatePaths, timeout_s: float = 240) -> int:
    """Until the supervised server runs and its port accepts connections; its pid."""
    deadline = time.monotonic() + timeout_s
    while (pid := _server_pid(paths)) is None:
        assert time.monotonic() < deadline, "the Spark Connect server is not RUNNING"
        time.sleep(0.2)
    host, _, port = settings.spark_connect_addr.rpartition(":")
    wait_for_port(host, int(port), timeout_s=max(1.0, deadline - time.monotonic()))
    return pid


@pytest.fixture(scope="module")
def server(platform: Settings) -> Iterator[StatePaths]:
    """The shared platform's supervised Spark Connect server, for this module."""
    paths = StatePaths.under(platform.state_dir)
    supervisor.ctl(paths, "start", supervisor.SPARK_CONNECT)
    try:
        _wait_serving(platform, paths)
        yield paths
    finally:
        supervisor.ctl(paths, "stop", supervisor.SPARK_CONNECT)


@pytest.fixture
def lake_settings(platform: Settings, tmp_path: Path) -> Settings:
    """The shared services, with empty analytics tables and a new lake."""
    with connect(platform, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE stream_event_keys, stream_batches, stream_minute_metrics, "
            "stream_slot_metrics, stream_heartbeat, events, event_items, load_watermarks, load_runs"
        )
    return platform.model_copy(
        update={"state_dir": tmp_path, "stream_max_records_per_batch": 2_000}
    )


def _load(settings: Settings, remote: str) -> subprocess.Popen[str]:
    """``python jobs/load/job.py --remote REMOTE load``, started."""
    return subprocess.Popen(
        [sys.executable, str(JOB), "--remote", remote, "load"],
        env=settings_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summaries(process: subprocess.Popen[str]) -> dict[str, dict[str, object]]:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return {s["table"]: s for s in map(json.loads, out.splitlines())}


def _stream(spark: SparkSession, settings: Settings, tenants: list[str], count: int) -> None:
    reference = Reference()
    merchants = register(settings, tenants)
    publish_mix(settings, merchants, count, seed=71, reference=reference)
    topics = [topic_for(t, settings.topic_template) for t in tenants]
    run_stream_until_consumed(spark, settings, topics, reference)


def _lake(settings: Settings) -> tuple[set[tuple[str, str]], int]:
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table()
    keys = set(zip(silver["tenant_id"].to_pylist(), silver["event_id"].to_pylist(), strict=True))
    items = DeltaTable(str(settings.lake_dir / "event_items")).to_pyarrow_table().num_rows
    return keys, items


def _warehouse(settings: Settings) -> tuple[list[tuple[str, str]], int]:
    with connect(settings) as conn:
        keys = conn.execute("SELECT tenant_id, event_id::text FROM events").fetchall()
        items = conn.execute("SELECT count(*) FROM event_items").fetchone()
    assert items is not None
    return [(t, e) for t, e in keys], int(items[0])


def test_a_load_on_the_server_moves_exactly_the_lake(
    spark: SparkSession, server: StatePaths, lake_settings: Settings
) -> None:
    settings = lake_settings
    _stream(spark, settings, TENANTS, 3_000)
    by_table = _summaries(_load(settings, settings.spark_connect_url))
    lake_keys, lake_items = _lake(settings)
    keys, items = _warehouse(settings)
    assert len(keys) == len(set(keys)), "no event twice"
    assert (set(keys), items) == (lake_keys, lake_items)
    assert by_table["events"]["inserted_rows"] == len(lake_keys) > 0
    assert by_table["event_items"]["inserted_rows"] == lake_items > 0

    # Nothing new: the run never connects to Spark (nothing listens there), and moves nothing.
    again = _summaries(_load(settings, "sc://127.0.0.1:1"))
    assert [(r["files"], r["inserted_rows"]) for r in again.values()] == [(0, 0), (0, 0)]


def _copying(settings: Settings) -> bool:
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %load_staging_%'"
        ).fetchone()
    return row is not None and row[0] > 0


def test_the_server_killed_mid_load_restarts_and_the_next_load_is_exact(
    spark: SparkSession, server: StatePaths, lake_settings: Settings
) -> None:
    settings = lake_settings
    _stream(spark, settings, KILL_TENANTS, 12_000)
    pid = _wait_serving(settings, server)
    loading = _load(settings, settings.spark_connect_url)
    deadline = time.monotonic() + 120
    while not _copying(settings):
        assert loading.poll() is None, "the load ended before its workers COPied anything"
        assert time.monotonic() < deadline, "the server's workers never started copying"
        time.sleep(0.005)
    # The chaos suite finds a running load's process by its title.
    assert PROCESS_TITLE in " ".join(psutil.Process(loading.pid).cmdline())
    psutil.Process(pid).send_signal(signal.SIGKILL)
    _out, err = loading.communicate(timeout=300)
    assert loading.returncode != 0, "the load went on although its server was killed"
    assert "Traceback" in err

    # supervisord starts the server again; the next load repairs the interrupted one.
    restarted = _wait_serving(settings, server)
    assert restarted != pid
    _summaries(_load(settings, settings.spark_connect_url))
    lake_keys, lake_items = _lake(settings)
    keys, items = _warehouse(settings)
    assert len(keys) == len(set(keys)), "no event twice"
    assert (set(keys), items) == (lake_keys, lake_items)
    with connect(settings) as conn:
        runs = conn.execute(
            "SELECT target, sum(inserted_rows)::int FROM load_runs GROUP BY target"
        ).fetchall()
    assert dict(runs) == {"events": len(lake_keys), "event_items": lake_items}
