"""Airflow as `make run` runs it (api-server, scheduler, dag-processor, triggerer under
supervisord, LocalExecutor, metadata in the platform's PostgreSQL), with the live stream:
DAGs driven through the REST API against real Spark, Delta tables and PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from deltalake import DeltaTable

from include.db import connect
from include.embedded import airflow, supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from tests.airflow_api import AirflowApi
from tests.clock import days_ago, iso_z
from tests.integration.stream_fixtures import register, wait_until_consumed
from tests.services import embedded_platform, run_generator

DAG_IDS = {"load_postgres", "maintain_postgres", "stream_watchdog"}
TENANTS = "airflow_alpha,airflow_beta"
# Screenshots of the browser test, kept after the run (not committed).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Settings, AirflowApi]]:
    """The platform with the stream and Airflow running, and a logged-in API client."""
    # Runs are triggered by the tests: a minute schedule would queue them behind its own runs.
    # env=dev, as under `make run`: the API seeds a dev token per demo tenant.
    with embedded_platform(
        apps=("stream", "api", *supervisor.BATCH_APPS),
        env="dev",
        demo_tenants=TENANTS.split(","),
        stream_trigger_seconds=1.0,
        load_schedule="0 0 1 1 *",
    ) as settings:
        yield settings, AirflowApi.login(settings)


def test_the_dags_are_parsed_and_unpaused(live: tuple[Settings, AirflowApi]) -> None:
    _settings, api = live
    dags = api.wait_for_dags(DAG_IDS)
    assert set(dags) >= DAG_IDS
    assert not any(dags[d]["is_paused"] for d in DAG_IDS), "DAGs run unpaused in dev and test"
    assert all(dags[d]["tags"] for d in DAG_IDS)


def test_load_postgres_loads_what_the_stream_wrote(live: tuple[Settings, AirflowApi]) -> None:
    settings, api = live
    api.wait_for_dags(DAG_IDS)
    summary = run_generator(
        settings, "burst", "--count", "3000", "--seed", "71", "--tenants", TENANTS
    )
    wait_until_consumed(settings, summary["sent"])
    run_id = api.trigger("load_postgres")
    assert api.wait_for_run("load_postgres", run_id) == "success"
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table()
    lake = set(
        zip(
            silver.column("tenant_id").to_pylist(),
            silver.column("event_id").to_pylist(),
            strict=True,
        )
    )
    with connect(settings) as conn:
        loaded = set(conn.execute("SELECT tenant_id, event_id::text FROM events").fetchall())
    assert loaded == lake and len(lake) > 2_000
    # And what the generator says it published: each tenant's distinct valid events.
    per_tenant = Counter(tenant for tenant, _ in loaded)
    assert per_tenant == {t: summary["per_tenant"][t]["valid"] for t in TENANTS.split(",")}


def test_stream_watchdog_fails_when_the_stream_stalls(live: tuple[Settings, AirflowApi]) -> None:
    settings, api = live
    api.wait_for_dags(DAG_IDS)
    paths = StatePaths.under(settings.state_dir)
    run_id = api.trigger("stream_watchdog")
    assert api.wait_for_run("stream_watchdog", run_id) == "success", "a healthy stream passes"
    supervisor.ctl(paths, "stop", "stream")
    try:
        run_generator(settings, "burst", "--count", "200", "--seed", "72", "--tenants", TENANTS)
        with connect(settings, autocommit=True) as conn:
            conn.execute("UPDATE stream_heartbeat SET updated_at = now() - interval '1 hour'")
        run_id = api.trigger("stream_watchdog")
        assert api.wait_for_run("stream_watchdog", run_id) == "failed"
        # It failed for the reason it exists: the task's log names the stall.
        logs = paths.logs / "airflow" / "dag_id=stream_watchdog" / f"run_id={run_id}"
        text = "".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*.log")))
        assert "StreamUnhealthyError" in text and "stalled: messages wait on" in text, text[-3000:]
    finally:
        supervisor.ctl(paths, "start", "stream")


def test_an_operator_triggers_load_postgres_in_the_ui_and_sees_it_succeed(
    live: tuple[Settings, AirflowApi],
) -> None:
    from playwright.sync_api import sync_playwright

    settings, api = live
    api.wait_for_dags(DAG_IDS)
    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is missing: `make setup` installs it"
    base = api.base_url
    password = airflow.ui_password(StatePaths.under(settings.state_dir))
    before = {r["dag_run_id"] for r in api.get("/dags/load_postgres/dagRuns")["dag_runs"]}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/")
            page.get_by_label("Username").fill(airflow.UI_USER)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=30_000)

            page.goto(f"{base}/dags")
            for dag_id in DAG_IDS:
                page.get_by_text(dag_id, exact=True).first.wait_for(timeout=30_000)

            page.goto(f"{base}/dags/load_postgres")
            page.get_by_role("button", name="Trigger").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="Trigger").click()

            run_id = _new_manual_run(api, before)
            assert api.wait_for_run("load_postgres", run_id) == "success"
            page.goto(f"{base}/dags/load_postgres/runs")
            row = page.get_by_role("row").filter(has_text=run_id)
            row.wait_for(timeout=30_000)
            assert "success" in row.inner_text().lower()
            page.screenshot(path=str(ARTIFACTS / "airflow_load_postgres_run.png"), full_page=True)
        finally:
            browser.close()


def _new_manual_run(api: AirflowApi, before: set[str], timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = api.get("/dags/load_postgres/dagRuns?run_type=manual")["dag_runs"]
        new = [r["dag_run_id"] for r in runs if r["dag_run_id"] not in before]
        if new:
            return str(new[0])
        time.sleep(1)
    raise AssertionError("clicking Trigger in the UI started no run")


def _program_pid(paths: StatePaths, name: str) -> int:
    return {p.name: p.pid for p in supervisor.process_info(paths)}[name]


def _task_state(api: AirflowApi, instances: str) -> str | None:
    found = api.get(instances)["task_instances"]
    # A task instance exists before it is scheduled: its state is then null.
    return found[0]["state"] if found else None


def _wait_for_a_call_to(port: int, timeout_s: float = 120) -> bool:
    """Whether a client connected to ``port`` (on this machine) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for conn in psutil.net_connections(kind="tcp4"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.raddr and conn.raddr.port == port:
                return True
        time.sleep(0.05)
    return False


def test_a_running_task_outlives_the_api_server_dying_under_it(
    live: tuple[Settings, AirflowApi],
) -> None:
    """The api-server dies while a task waits on it: supervisord restarts it, the task's calls
    wait for the new one, and the run succeeds on its first try (issue #17, item 4)."""
    settings, api = live
    api.wait_for_dags(DAG_IDS)
    paths = StatePaths.under(settings.state_dir)
    run_id = api.trigger("stream_watchdog")
    instances = f"/dags/stream_watchdog/dagRuns/{run_id}/taskInstances"
    deadline = time.monotonic() + 120
    while (state := _task_state(api, instances)) not in ("queued", "running"):
        assert state in (None, "scheduled"), f"it ended before it was seen: {state}"
        assert time.monotonic() < deadline, f"the task was never queued: {state}"
        time.sleep(0.1)
    old_pid = _program_pid(paths, "airflow-api-server")
    # Frozen before the task's next call (its start, a heartbeat or its end), and killed only
    # once that call is in flight: the kernel accepts the connection, nobody answers it.
    os.kill(old_pid, signal.SIGSTOP)
    try:
        assert _wait_for_a_call_to(settings.airflow_port), "the task made no call in 120 s"
        killed_at = datetime.now(UTC)
    finally:
        os.kill(old_pid, signal.SIGKILL)
    # Until supervisord has seen the death, it still reports the killed process as RUNNING.
    deadline = time.monotonic() + 60
    while _program_pid(paths, "airflow-api-server") == old_pid:
        assert time.monotonic() < deadline, "supervisord never saw the api-server die"
        time.sleep(0.05)
    supervisor.wait_running(paths, {"airflow-api-server"}, timeout_s=180)
    api = AirflowApi.login(settings)
    assert api.wait_for_run("stream_watchdog", run_id) == "success"
    task = api.get(instances)["task_instances"][0]
    assert task["state"] == "success" and task["try_number"] == 1, task
    assert datetime.fromisoformat(task["end_date"]) > killed_at, "it ended before the kill"
    # Its end went through the new process: the log after that process's start has the call.
    log = (paths.logs / "airflow-api-server.log").read_text(errors="replace")
    since_restart = log.rsplit("Started server process", 1)[1]
    assert f"/execution/task-instances/{task['id']}/state" in since_restart


def test_maintain_postgres_vacuums_and_rotates_partitions(
    live: tuple[Settings, AirflowApi],
) -> None:
    from datetime import UTC, datetime

    from include.warehouse.partitions import Month, ensure_partitions, partitions_of

    settings, api = live
    api.wait_for_dags({"maintain_postgres"})
    today = Month.of(datetime.now(UTC).date())
    expired = Month(today.year - 5, 1)
    with connect(settings) as conn:
        ensure_partitions(conn, "events", {expired})
        conn.commit()
        started = conn.execute("SELECT now()").fetchone()
    run_id = api.trigger("maintain_postgres")
    assert api.wait_for_run("maintain_postgres", run_id) == "success"
    with connect(settings) as conn:
        months = set(partitions_of(conn, "events").values())
        items_months = set(partitions_of(conn, "event_items").values())
        vacuumed = conn.execute(
            "SELECT min(last_vacuum), min(last_analyze) FROM pg_stat_user_tables "
            "WHERE relname ~ '^(events|event_items)_p'"
        ).fetchone()
    assert expired not in months, "a partition past retention was dropped"
    coming = {today, today.next(), today.next().next()}
    assert coming <= months and coming <= items_months
    assert started is not None and vacuumed is not None
    assert vacuumed[0] is not None and vacuumed[0] >= started[0], "every partition was vacuumed"
    assert vacuumed[1] is not None and vacuumed[1] >= started[0]


def _rows(
    settings: Settings, tenant: str
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    from include.warehouse.tables import EVENT_ITEMS, EVENTS

    with connect(settings) as conn:
        events = conn.execute(
            f"SELECT {', '.join(EVENTS.columns)} FROM events WHERE tenant_id = %s "
            "ORDER BY event_id",
            (tenant,),
        ).fetchall()
        items = conn.execute(
            f"SELECT {', '.join(EVENT_ITEMS.columns)} FROM event_items WHERE tenant_id = %s "
            "ORDER BY event_id, line_number",
            (tenant,),
        ).fetchall()
    return events, items


def test_archive_then_replay_rebuilds_postgres_exactly(live: tuple[Settings, AirflowApi]) -> None:
    settings, api = live
    api.wait_for_dags({"archive_lake", "replay", "load_postgres"})
    tenant = "airflow_old"
    with connect(settings) as conn:
        row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
    assert row is not None
    # Ninety days ago: older than archive_lake's hot days (30) on any day the test runs.
    old_day = days_ago(90, hour=8)
    summary = run_generator(
        settings, "burst", "--count", "1500", "--seed", "73", "--tenants", tenant,
        "--start-time", old_day.isoformat(),
    )  # fmt: skip
    wait_until_consumed(settings, int(row[0]) + summary["sent"])
    assert api.wait_for_run("load_postgres", api.trigger("load_postgres")) == "success"
    loaded = _rows(settings, tenant)
    assert len(loaded[0]) > 1_000 and loaded[1], "the old tenant's events reached PostgreSQL"

    assert api.wait_for_run("archive_lake", api.trigger("archive_lake")) == "success"
    for table in ("bronze", "silver", "event_items"):
        rows = DeltaTable(str(settings.lake_dir / table)).to_pyarrow_table(
            filters=[("tenant_id", "=", tenant)]
        )
        assert rows.num_rows == 0, f"{table} still holds the archived partitions"
        manifests = list(
            (settings.archive_dir / table / "_manifest").glob(f"tenant_id={tenant}__*")
        )
        assert manifests, f"{table} has no manifest for the archived partitions"

    with connect(settings, autocommit=True) as conn:  # PostgreSQL lost that tenant's rows
        conn.execute("DELETE FROM events WHERE tenant_id = %s", (tenant,))
        conn.execute("DELETE FROM event_items WHERE tenant_id = %s", (tenant,))
    conf = {
        "tenant": tenant,
        "date_from": (old_day - timedelta(days=31)).date().isoformat(),
        "date_to": (old_day + timedelta(days=60)).date().isoformat(),
        "source": "archive",
    }
    assert api.wait_for_run("replay", api.trigger("replay", conf)) == "success"
    assert _rows(settings, tenant) == loaded


def _api(settings: Settings, method: str, path: str, token: str, **params: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"http://127.0.0.1:{settings.api_port}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _api_ready(settings: Settings, token: str) -> None:
    # The API serves registered tenants only; registering is idempotent (generator profile).
    register(settings, [token.removesuffix("-token")])
    deadline = time.monotonic() + 60
    while _api(settings, "GET", "/usage", token).status_code != 200:
        assert time.monotonic() < deadline, "the supervised API never accepted the dev token"
        time.sleep(1)


def test_live_metrics_move_as_the_generator_publishes(live: tuple[Settings, AirflowApi]) -> None:
    settings, _api_client = live
    tenant = TENANTS.split(",")[0]
    token = f"{tenant}-token"  # the documented dev token
    _api_ready(settings, token)
    # Eleven days ago, and a window that ends before today: the earlier tests' bursts (at the
    # current time) never enter it, even while the stream still consumes them.
    burst_at = days_ago(11, hour=10)
    window = {
        "start": iso_z(burst_at.replace(hour=0) - timedelta(days=10)),
        "end": iso_z(burst_at.replace(hour=0) + timedelta(days=2)),
    }

    def events_now() -> int:
        response = _api(settings, "GET", "/metrics", token, granularity="day", **window)
        assert response.status_code == 200, response.text
        return int(response.json()["totals"]["events"])

    before = events_now()
    with connect(settings) as conn:
        row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
    assert row is not None
    summary = run_generator(
        settings, "burst", "--count", "400", "--seed", "75", "--tenants", tenant,
        "--start-time", burst_at.isoformat(), "--late-share", "0",
    )  # fmt: skip
    wait_until_consumed(settings, int(row[0]) + summary["sent"])
    valid = summary["per_tenant"][tenant]["valid"]
    assert events_now() == before + valid > before
    other = _api(settings, "GET", "/metrics", token, tenant_id=TENANTS.split(",")[1], **window)
    assert other.status_code == 403


# The characters of a customer id (include.privacy); the id is a whole token between others.
_ID_CHARS = "A-Za-z0-9._@:+-"


def _lake_rows_of(settings: Settings, tenant: str, customer: str) -> int:
    """Rows naming ``customer`` in the four Delta tables, counted here from the tables: their
    silver events, those events' bronze rows and item lines, and quarantined payloads that
    contain the id as a whole token."""
    lake = settings.lake_dir

    def rows(table: str, partition: str, columns: list[str]) -> dict[str, list[Any]]:
        if not (lake / table / "_delta_log").is_dir():
            return {c: [] for c in columns}
        data = DeltaTable(str(lake / table)).to_pyarrow_table(
            columns=columns, filters=[(partition, "=", tenant)]
        )
        return {c: data.column(c).to_pylist() for c in columns}

    silver = rows("silver", "tenant_id", ["event_id", "customer_customer_id"])
    events = {
        e for e, c in zip(silver["event_id"], silver["customer_customer_id"], strict=True)
        if c == customer
    }  # fmt: skip
    bronze = sum(e in events for e in rows("bronze", "tenant_id", ["event_id"])["event_id"])
    items = sum(e in events for e in rows("event_items", "tenant_id", ["event_id"])["event_id"])
    token = re.compile(rf"(?<![{_ID_CHARS}]){re.escape(customer)}(?![{_ID_CHARS}])".encode())
    payloads = rows("quarantine", "topic_tenant", ["payload"])["payload"]
    quarantined = sum(p is not None and token.search(p) is not None for p in payloads)
    return len(events) + bronze + items + quarantined


def test_erasure_reaches_the_lake_through_airflow_and_a_replay_does_not_bring_it_back(
    live: tuple[Settings, AirflowApi],
) -> None:
    settings, api = live
    api.wait_for_dags({"erase_customer", "replay", "load_postgres"})
    tenant = TENANTS.split(",")[1]
    _api_ready(settings, f"{tenant}-token")
    with connect(settings) as conn:
        row = conn.execute("SELECT coalesce(sum(input_rows), 0) FROM stream_batches").fetchone()
    assert row is not None
    # Ten days ago: the replayed window below holds this burst and none of the earlier tests'
    # events of the tenant (published at the current time), on any day the test runs.
    burst_at = days_ago(10, hour=10)
    summary = run_generator(
        settings, "burst", "--count", "600", "--seed", "76", "--tenants", tenant,
        "--start-time", burst_at.isoformat(), "--late-share", "0",
    )  # fmt: skip
    wait_until_consumed(settings, int(row[0]) + summary["sent"])
    assert api.wait_for_run("load_postgres", api.trigger("load_postgres")) == "success"
    date_from = burst_at.date() - timedelta(days=1)
    date_to = burst_at.date() + timedelta(days=1)
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table(
        filters=[("tenant_id", "=", tenant)]
    )
    days = silver.column("event_date").to_pylist()
    in_window = [
        customer
        for customer, day in zip(
            silver.column("customer_customer_id").to_pylist(), days, strict=True
        )
        if date_from <= day <= date_to
    ]
    # The burst has no late sessions and no duplicates: the window holds exactly its valid events.
    assert len(in_window) == summary["per_tenant"][tenant]["valid"] > 0
    customer, count = Counter(in_window).most_common(1)[0]
    assert count >= 2
    expected_lake_rows = _lake_rows_of(settings, tenant, customer)

    response = _api(
        settings, "DELETE", f"/tenants/{tenant}/customers/{customer}", f"{tenant}-token"
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    deadline = time.monotonic() + 300
    while True:
        status = _api(settings, "GET", f"/erasures/{request_id}", f"{tenant}-token").json()
        if status["status"] in ("completed", "failed") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status["status"] == "completed", status
    assert status["dag_run_id"] and status["lake_rows"] == expected_lake_rows

    def customer_rows() -> tuple[int, int]:
        # Filter on the partition only: delta-rs reads the id column as string_view, which
        # pyarrow cannot compare with a string scalar in a filter.
        silver_now = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table(
            filters=[("tenant_id", "=", tenant)]
        )
        lake_rows = silver_now.column("customer_customer_id").to_pylist().count(customer)
        with connect(settings) as conn:
            pg = conn.execute(
                "SELECT count(*) FROM events WHERE tenant_id = %s AND customer_customer_id = %s",
                (tenant, customer),
            ).fetchone()
        assert pg is not None
        return lake_rows, int(pg[0])

    assert customer_rows() == (0, 0)
    conf = {
        "tenant": tenant,
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "source": "delta",
    }
    with connect(settings, autocommit=True) as conn:  # PostgreSQL lost the tenant: replay it
        conn.execute("DELETE FROM events WHERE tenant_id = %s", (tenant,))
    assert api.wait_for_run("replay", api.trigger("replay", conf)) == "success"
    assert customer_rows() == (0, 0)
    with connect(settings) as conn:
        back = conn.execute(
            "SELECT count(*) FROM events WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    # Exactly the window's events, less the erased customer's: nothing else was replayed.
    assert back == (len(in_window) - count,)
