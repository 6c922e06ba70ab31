"""The end-to-end run, in parts a test (or the chaos suite) puts together.

- ``Platform.start()`` runs every component the way ``make run`` does (supervisord with
  PostgreSQL, pulsar-lite, the Spark streaming job, the API and Airflow's four processes) on
  free ports in a temporary state directory; ``Platform.kill`` and ``Platform.pid`` reach one
  supervised program by its name (``PROGRAMS``).
- ``publish_mix(settings, tenants, seed)`` publishes a seeded mix with the project's generator
  and returns every message it published, with the quarantine reason each bad one must get.
- ``expected(published)`` computes, from those messages alone, what the platform must end up
  holding; ``assert_end_state`` checks it through the API with tenant tokens only, and in the
  Delta tables with an independent reader (``tests.e2e.lake_reader``).

Every wait tolerates a service that is down for a while (it retries until its deadline), so a
run with faults injected can use the same steps.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import httpx
import orjson
import psycopg

from generator.catalog import merchant_profile
from generator.messages import DUPLICATE, VALID, FaultShares, OutgoingMessage, message_stream
from generator.publisher import Publisher
from generator.sessions import SessionFactory
from include.db import connect
from include.embedded import supervisor
from include.embedded.paths import StatePaths
from include.pulsar_client import pulsar_client
from include.settings import Settings
from include.tenants import topic_for
from tests.airflow_api import AirflowApi
from tests.clock import iso_z
from tests.e2e import lake_reader
from tests.integration.api_reference import (
    ZERO_MEASURES,
    as_reference,
    event_time,
    expected_metrics,
)
from tests.integration.stream_fixtures import MIX_START, REASON_OF_KIND, hand_made_bad_messages
from tests.services import embedded_platform

log = logging.getLogger(__name__)

TENANTS = ("e2e_alpha", "e2e_beta", "e2e_gamma")
# supervisord's program names: the services, then the apps `make run` starts once they are up.
SERVICES = ("postgres", "pulsar")
APPS = ("stream", "api", *supervisor.BATCH_APPS)
PROGRAMS = (*SERVICES, *APPS)
LOAD_DAG = "load_postgres"
# Sessions end 7 s apart from here on; late ones are shifted back by 1 hour to 3 days. Ten days
# ago (tests.clock): young enough for archive_lake to keep, old enough to be all in the past.
START = MIX_START
FAULTS = FaultShares(duplicate=0.05, malformed=0.02, unsupported_version=0.02, tenant_mismatch=0.03)
# load_postgres: each target (load_watermarks.target) and the lake table it loads from.
LOAD_SOURCES = {"events": "silver", "event_items": "event_items"}


# -- the platform --------------------------------------------------------------------------------


@dataclass
class Platform:
    """A running platform: its settings, supervisord's state and clients of its two APIs."""

    settings: Settings
    _airflow: AirflowApi | None = None

    @property
    def paths(self) -> StatePaths:
        return StatePaths.under(self.settings.state_dir)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def admin_token(self) -> str:
        return self.settings.admin_token.get_secret_value()

    @property
    def airflow(self) -> AirflowApi:
        """A logged-in client of Airflow's REST API (the first use waits for the API server,
        which starts slower than the rest: a run needs it only when it loads)."""
        if self._airflow is None:
            self._airflow = AirflowApi.login(self.settings, timeout_s=600)
        return self._airflow

    @classmethod
    @contextmanager
    def start(cls, **overrides: object) -> Iterator[Platform]:
        """Start every program of ``PROGRAMS``; stop them all and delete the state on exit.

        Defaults keep a run short: a 1 s stream trigger; ``load_postgres`` runs only when
        triggered (``wait_loaded`` does), so no scheduled run queues in front of a test's; two
        Airflow task slots (LocalExecutor forks one worker per slot at start, on 2 cores).
        """
        values: dict[str, object] = {
            "stream_trigger_seconds": 1.0,
            "load_schedule": "0 0 1 1 *",
            "airflow_parallelism": 2,
        }
        values.update(overrides)
        with embedded_platform(apps=APPS, **values) as settings:
            platform = cls(settings)
            platform.wait_api()
            yield platform

    # -- supervised programs -------------------------------------------------------------------
    def pid(self, program: str) -> int:
        """The pid of a running supervised program (0 when it is not running)."""
        for info in supervisor.process_info(self.paths):
            if info.name == program:
                return info.pid
        raise KeyError(f"no supervised program {program!r}")

    def kill(self, program: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Send ``sig`` to a program's process group (as a crash would end it); return the pid."""
        pid = self.pid(program)
        if pid == 0:
            raise RuntimeError(f"{program} is not running")
        os.killpg(pid, sig)
        return pid

    def wait_running(self, programs: tuple[str, ...] = PROGRAMS, timeout_s: float = 180) -> None:
        """Block until each program is RUNNING again (supervisord restarts crashed ones)."""
        supervisor.wait_running(self.paths, set(programs), timeout_s=timeout_s)

    def assert_none_gave_up(self) -> None:
        """Fail at once when supervisord gave up restarting a program (FATAL): no wait helps."""
        fatal = [p.name for p in supervisor.process_info(self.paths) if p.state == "FATAL"]
        assert not fatal, f"supervisord gave up on {fatal}: see {self.paths.logs}"

    # -- the analytics API ---------------------------------------------------------------------
    def api(
        self, method: str, path: str, token: str, *, json: Any = None, **params: Any
    ) -> httpx.Response:
        """One request to the analytics API with ``token``."""
        return httpx.request(
            method,
            f"{self.api_url}{path}",
            params=params,
            json=json,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def wait_api(self, timeout_s: float = 120) -> None:
        """Block until the API answers the admin token (its pool is up, its tokens seeded)."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                response = self.api("GET", "/tenants", self.admin_token)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(1)
        raise AssertionError(f"the API never accepted the admin token: {last}")

    def register_tenants(self, tenants: tuple[str, ...]) -> dict[str, str]:
        """Register ``tenants`` through the API as admin, each with the generator's currency,
        and create one tenant token each; return tenant -> token."""
        tokens = {}
        for tenant in tenants:
            profile = merchant_profile(tenant)
            body = {"tenant_id": tenant, "name": profile.display_name, "currency": profile.currency}
            created = self.api("POST", "/tenants", self.admin_token, json=body)
            assert created.status_code == 201, created.text
            assert created.json()["currency"] == profile.currency
            token = self.api(
                "POST",
                f"/tenants/{tenant}/tokens",
                self.admin_token,
                json={"role": "tenant", "expires_at": None, "name": "e2e"},
            )
            assert token.status_code == 201, token.text
            assert token.json()["tenant_id"] == tenant and token.json()["role"] == "tenant"
            tokens[tenant] = str(token.json()["token"])
        return tokens

    # -- waiting for the pipeline --------------------------------------------------------------
    def wait_consumed(self, messages: int, timeout_s: float = 600) -> None:
        """Block until the stream's committed batches account for ``messages`` messages and
        every Delta table holds the last of them."""
        from jobs.stream.sink import lake_caught_up

        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            self.assert_none_gave_up()
            try:
                with connect(self.settings) as conn:
                    row = conn.execute(
                        "SELECT coalesce(sum(input_rows), 0) FROM stream_batches"
                    ).fetchone()
                seen = int(row[0]) if row else 0
                if seen > messages:
                    raise AssertionError(f"the stream consumed {seen} messages of {messages}")
                if seen == messages and lake_caught_up(
                    self.settings.lake_dir, self.settings.pg_dsn
                ):
                    return
            except psycopg.OperationalError as error:  # PostgreSQL restarting
                log.info("waiting for PostgreSQL: %s", error)
            time.sleep(1)
        raise AssertionError(f"the stream consumed {seen} of {messages} messages in time")

    def loaded(self) -> bool:
        """Whether each load target's watermark is at its lake table's newest version."""
        with connect(self.settings) as conn:
            rows = conn.execute("SELECT target, delta_version FROM load_watermarks").fetchall()
        marks: dict[str, int] = {str(target): int(version) for target, version in rows}
        for target, source in LOAD_SOURCES.items():
            latest = lake_reader.latest_version(self.settings.lake_dir / source)
            if latest is None or marks.get(target, -1) < latest:
                return False
        return True

    def wait_loaded(self, timeout_s: float = 600, max_failed_runs: int = 0) -> list[str]:
        """Trigger ``load_postgres`` through the Airflow REST API, one run at a time, until the
        loaded watermarks cover the lake; return the run ids. More than ``max_failed_runs``
        failed runs fail the wait."""
        self.airflow.wait_for_dags({LOAD_DAG}, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        runs: list[str] = []
        failed: list[str] = []
        state = "none"
        while time.monotonic() < deadline:
            self.assert_none_gave_up()
            try:
                if self.loaded():
                    return runs
                if runs:
                    state = str(self.airflow.get(f"/dags/{LOAD_DAG}/dagRuns/{runs[-1]}")["state"])
                if state == "failed":
                    failed.append(runs[-1])
                    if len(failed) > max_failed_runs:
                        raise AssertionError(f"{LOAD_DAG} runs failed: {failed}")
                if not runs or state in ("success", "failed"):
                    runs.append(self.airflow.trigger(LOAD_DAG))
                    state = "queued"
            except (httpx.HTTPError, psycopg.OperationalError) as error:
                log.info("waiting for Airflow or PostgreSQL: %s", error)
            time.sleep(2)
        raise AssertionError(f"{LOAD_DAG} did not load the lake in {timeout_s:.0f} s: {runs}")


# -- what is published ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One published message: the tenant whose topic got it, its key and bytes, the generator's kind
    (``valid``, ``duplicate``, a fault kind, or ``bad`` for hand-made ones) and the quarantine
    reason it must get (None for valid events and duplicates)."""

    topic_tenant: str
    key: str
    payload: bytes
    kind: str
    reason: str | None


@dataclass(frozen=True)
class Published:
    """Everything one run published, in order."""

    seed: int
    tenants: tuple[str, ...]
    messages: tuple[Message, ...]


def build_mix(
    tenants: tuple[str, ...], seed: int, count: int, start: datetime = START
) -> list[Message]:
    """``count`` generator messages over ``tenants`` (valid v1 and v2 events, late sessions,
    duplicates, malformed, unsupported versions, tenant mismatches) with hand-made bad messages
    of the other reasons (currency mismatch, schema violations, too large, not UTF-8) placed at
    seeded positions. Pure: the same arguments give the same messages."""
    rng = random.Random(seed)
    clock_state = [start]

    def clock() -> datetime:
        clock_state[0] += timedelta(seconds=7)
        return clock_state[0]

    merchants = [merchant_profile(t) for t in tenants]
    factory = SessionFactory(rng, v2_share=0.4, late_share=0.1)
    generated = list(islice(message_stream(merchants, rng, factory, FAULTS, clock), count))
    messages = [
        Message(
            m.tenant_id,
            m.key,
            m.payload,
            m.kind,
            None if m.kind in (VALID, DUPLICATE) else REASON_OF_KIND[m.kind],
        )
        for m in generated
    ]
    for merchant in merchants:
        for bad, reason in hand_made_bad_messages(merchant, start):
            messages.insert(rng.randrange(len(messages) + 1), Message(
                bad.tenant_id, bad.key, bad.payload, bad.kind, reason
            ))  # fmt: skip
    return messages


def publish(
    settings: Settings,
    messages: list[Message],
    *,
    chunks: int = 1,
    between_chunks: Callable[[int], None] | None = None,
) -> None:
    """Publish ``messages`` in order with the generator's publisher, in ``chunks`` parts each
    drained (acknowledged) before ``between_chunks(index)`` runs; every message must be sent."""
    client = pulsar_client(settings.pulsar_url)
    publisher = Publisher(client, lambda t: topic_for(t, settings.topic_template), chunk_size=200)
    size = -(-len(messages) // chunks)
    try:
        for index in range(chunks):
            for message in messages[index * size : (index + 1) * size]:
                publisher.publish(
                    OutgoingMessage(
                        message.topic_tenant, message.key, message.payload, message.kind, None
                    )
                )
            publisher.drain(timeout_s=120)
            if between_chunks is not None:
                between_chunks(index)
    finally:
        publisher.close()
        client.close()
    assert publisher.stats.failed == 0, publisher.stats.summary()
    assert publisher.stats.sent == len(messages), publisher.stats.summary()


def publish_mix(
    settings: Settings, tenants: tuple[str, ...], seed: int, count: int = 3_000
) -> Published:
    """Build the seeded mix (``build_mix``), publish it, and return what was published."""
    messages = build_mix(tenants, seed, count)
    publish(settings, messages)
    return Published(seed, tenants, tuple(messages))


@dataclass(frozen=True)
class MixRun:
    """One seeded mix through a running platform: the tenants' tokens, what was published and
    expected, and the ``load_postgres`` runs that loaded it."""

    tokens: dict[str, str]
    published: Published
    expected: Expected
    load_runs: list[str]


def run_mix(platform: Platform, seed: int, count: int = 3_000) -> MixRun:
    """Register ``TENANTS``, publish the seeded mix, wait until the stream consumed all of it
    and ``load_postgres`` (triggered through Airflow) loaded the lake; each phase is logged."""
    started = time.monotonic()

    def phase(name: str) -> None:  # shown with the test's captured log when it fails
        log.info("e2e: %s after %.1f s", name, time.monotonic() - started)

    tokens = platform.register_tenants(TENANTS)
    published = publish_mix(platform.settings, TENANTS, seed, count)
    phase("tenants registered, mix published")
    exp = expected(published)
    platform.wait_consumed(exp.messages)
    phase("stream consumed everything")
    runs = platform.wait_loaded()
    phase(f"load_postgres runs {runs} loaded everything")
    return MixRun(tokens, published, exp, runs)


# -- what must come out --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """The end state the platform must reach, computed from the published messages only."""

    tenants: tuple[str, ...]
    messages: int
    # Each distinct valid event once, as published (parsed JSON), per tenant.
    events: dict[str, list[dict[str, Any]]]
    bronze_rows: dict[str, int]
    item_rows: dict[str, int]
    quarantine: dict[tuple[str, str], int] = field(default_factory=dict)

    def event_ids(self, tenant: str) -> set[str]:
        return {e["event_id"] for e in self.events[tenant]}

    def revenue(self, tenant: str) -> Decimal:
        """Sum of the purchases' order totals."""
        return sum(
            (
                Decimal(str(e["order"]["total_amount"]))
                for e in self.events[tenant]
                if e["event_type"] == "purchase"
            ),
            Decimal("0.00"),
        )

    def quarantined(self, tenant: str) -> dict[str, int]:
        """Quarantined messages of ``tenant``'s topic, by reason."""
        return {r: n for (t, r), n in self.quarantine.items() if t == tenant}


def expected(published: Published) -> Expected:
    """What ``published`` must produce: valid messages reach bronze, each distinct event id
    reaches silver (and its item lines event_items) once, every bad message reaches quarantine
    under its topic's tenant with its reason."""
    events: dict[str, list[dict[str, Any]]] = {t: [] for t in published.tenants}
    seen: dict[str, set[str]] = defaultdict(set)
    bronze: Counter[str] = Counter()
    items: Counter[str] = Counter()
    quarantine: Counter[tuple[str, str]] = Counter()
    for message in published.messages:
        tenant = message.topic_tenant
        if message.reason is not None:
            quarantine[(tenant, message.reason)] += 1
            continue
        body = orjson.loads(message.payload)
        bronze[tenant] += 1
        if body["event_id"] in seen[tenant]:
            continue
        seen[tenant].add(body["event_id"])
        events[tenant].append(body)
        items[tenant] += len(body["items"])
    return Expected(
        tenants=published.tenants,
        messages=len(published.messages),
        events=events,
        bronze_rows=dict(bronze),
        item_rows=dict(items),
        quarantine=dict(quarantine),
    )


# -- checking the end state ----------------------------------------------------------------------


def assert_end_state(platform: Platform, tokens: dict[str, str], exp: Expected) -> None:
    """Everything: the API's answers to tenant tokens, tenant isolation, and the lake."""
    for tenant in exp.tenants:
        assert_metrics(platform, tokens[tenant], exp, tenant)
        assert_events(platform, tokens[tenant], exp, tenant)
        assert_usage(platform, tokens[tenant], exp, tenant)
    assert_isolation(platform, tokens, exp)
    assert_lake(platform.settings, exp)


def metric_windows(exp: Expected, tenant: str) -> list[dict[str, Any]]:
    """The ``/metrics`` queries checked: every event in hours (UTC, on the rollup's quarter
    hours) and in days of a half-hour zone, and 90 minutes off the quarter-hour grid per minute
    and per hour (distinct counts then come from the events table, not the rollup)."""
    times = [event_time(e) for e in exp.events[tenant]]
    first = min(times).replace(minute=0, second=0, microsecond=0)
    last = max(times).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    day_first = first.replace(hour=0)
    day_last = last.replace(hour=0) + timedelta(days=1)
    off_grid = START + timedelta(minutes=7)
    return [
        {"start": first, "end": last, "granularity": "hour", "timezone": "UTC"},
        {"start": day_first, "end": day_last, "granularity": "day", "timezone": "Asia/Kolkata"},
        {"start": off_grid, "end": off_grid + timedelta(minutes=90), "granularity": "minute",
         "timezone": "UTC"},
        {"start": off_grid, "end": off_grid + timedelta(minutes=90), "granularity": "hour",
         "timezone": "Europe/Paris"},
    ]  # fmt: skip


def assert_metrics(platform: Platform, token: str, exp: Expected, tenant: str) -> None:
    """``/metrics`` totals and every bucket of the series equal the reference computed from
    the published events; the whole-range totals count each distinct event once."""
    for number, window in enumerate(metric_windows(exp, tenant)):
        start, end = window["start"], window["end"]
        params = {**window, "start": start.isoformat(), "end": end.isoformat()}
        response = platform.api("GET", "/metrics", token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["tenant_id"] == tenant
        buckets, totals = expected_metrics(
            exp.events[tenant], start, end, window["granularity"], window["timezone"]
        )
        label = f"{tenant} {window['granularity']} {window['timezone']}"
        assert as_reference(body["totals"]) == totals, label
        served = {datetime.fromisoformat(p["bucket_start"]): p for p in body["series"]}
        starts = [datetime.fromisoformat(p["bucket_start"]) for p in body["series"]]
        assert starts == sorted(served), f"{label}: buckets in order, each once"
        assert set(buckets) <= set(served), f"{label}: every bucket with events is served"
        empty = as_reference({**body["totals"], **ZERO_MEASURES})
        for bucket, point in served.items():
            assert as_reference(point) == buckets.get(bucket, empty), f"{label} {bucket}"
        if number == 0:  # the whole range: every distinct event, all revenue
            assert body["totals"]["events"] == len(exp.events[tenant]) > 0
            assert Decimal(body["totals"]["revenue"]) == exp.revenue(tenant) > 0
            newest = max(event_time(e) for e in exp.events[tenant])
            assert datetime.fromisoformat(body["freshness"]["newest_event_time"]) == newest
            assert body["freshness"]["batch_loaded_at"] is not None


def _masked_email(email: str | None) -> str | None:
    if email is None:
        return None
    local, domain = email.split("@", 1)
    return f"{local[0]}***@{domain}"


def walk_events(platform: Platform, token: str, page_size: int = 250) -> list[dict[str, Any]]:
    """Every item of ``/events`` for ``token``, following ``next_cursor`` to the last page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": page_size}
        if cursor:
            params["cursor"] = cursor
        response = platform.api("GET", "/events", token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= page_size
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == page_size, "only the last page is short"


def assert_events(platform: Platform, token: str, exp: Expected, tenant: str) -> None:
    """``/events``, walked page by page, serves each of the tenant's events once, newest
    first, with the fields as published (PII masked for a tenant token), and nothing else."""
    items = walk_events(platform, token)
    ids = [i["event_id"] for i in items]
    assert len(ids) == len(set(ids)), f"{tenant}: an event was served twice"
    assert set(ids) == exp.event_ids(tenant), f"{tenant}: served events differ from published"
    times = [datetime.fromisoformat(i["event_time"]) for i in items]
    assert times == sorted(times, reverse=True), "newest first"
    published = {e["event_id"]: e for e in exp.events[tenant]}
    for item in items:
        event = published[item["event_id"]]
        order = event["order"] or {}
        marketing = event.get("marketing") or {}
        served = (
            item["event_type"], datetime.fromisoformat(item["event_time"]),
            item["schema_version"], item["session_id"], item["customer_id"],
            item["customer_email"], item["order_total_amount"], item["item_count"],
            item["marketing_campaign"],
        )  # fmt: skip
        assert served == (
            event["event_type"], event_time(event), event["schema_version"],
            event["session_id"], event["customer"]["customer_id"],
            _masked_email(event["customer"]["email"]),
            None if not order else f"{Decimal(str(order['total_amount'])):.2f}",
            len(event["items"]), marketing.get("campaign"),
        ), item["event_id"]  # fmt: skip


def assert_usage(platform: Platform, token: str, exp: Expected, tenant: str) -> None:
    """``/usage``: the distinct events ingested and the quarantined messages by reason."""
    response = platform.api("GET", "/usage", token)
    assert response.status_code == 200, response.text
    (usage,) = response.json()["tenants"]
    assert usage["tenant_id"] == tenant
    assert usage["events_ingested"] == len(exp.events[tenant])
    assert usage["quarantined_by_reason"] == exp.quarantined(tenant)
    assert usage["quarantined"] == sum(exp.quarantined(tenant).values()) > 0


def assert_isolation(platform: Platform, tokens: dict[str, str], exp: Expected) -> None:
    """A tenant token gets 403 on every other tenant and on admin endpoints."""
    window = {"start": iso_z(START - timedelta(days=20)), "end": iso_z(START + timedelta(days=10))}
    for tenant, token in tokens.items():
        for other in exp.tenants:
            if other == tenant:
                continue
            refused = [
                platform.api("GET", "/metrics", token, tenant_id=other, **window),
                platform.api("GET", "/metrics/funnel", token, tenant_id=other, **window),
                platform.api("GET", "/events", token, tenant_id=other),
                platform.api("GET", "/usage", token, tenant_id=other),
                platform.api("GET", f"/tenants/{other}/tokens", token),
                platform.api("POST", f"/tenants/{other}/tokens", token, json={"name": "x"}),
            ]
            for response in refused:
                assert response.status_code == 403, (
                    f"{tenant}'s token on {other}: {response.request.url} "
                    f"answered {response.status_code}"
                )
        assert platform.api("GET", "/tenants", token).status_code == 403
        others = set().union(*(exp.event_ids(o) for o in exp.tenants if o != tenant))
        assert not exp.event_ids(tenant) & others, "the generator gave two tenants one event id"


def lake_numbers(settings: Settings) -> dict[str, Any]:
    """Per-tenant numbers of the Delta tables, read with DuckDB over the log replayed by hand:
    silver rows, distinct event ids and revenue, the event ids themselves, bronze and item rows,
    quarantined messages by (topic tenant, reason)."""
    import duckdb

    con = duckdb.connect()
    try:
        for table in ("silver", "bronze", "event_items", "quarantine"):
            lake_reader.register_table(con, table, settings.lake_dir / table)
        silver = {
            t: (rows, distinct, revenue)
            for t, rows, distinct, revenue in con.execute(
                "SELECT tenant_id, count(*), count(DISTINCT event_id), "
                "coalesce(sum(order_total_amount) FILTER (WHERE event_type = 'purchase'), 0) "
                "FROM silver GROUP BY tenant_id"
            ).fetchall()
        }
        ids: dict[str, set[str]] = defaultdict(set)
        for tenant, event_id in con.execute("SELECT tenant_id, event_id FROM silver").fetchall():
            ids[tenant].add(str(event_id))
        count = "SELECT {0}, count(*) FROM {1} GROUP BY ALL"
        return {
            "silver": silver,
            "silver_ids": dict(ids),
            "bronze": dict(con.execute(count.format("tenant_id", "bronze")).fetchall()),
            "event_items": dict(con.execute(count.format("tenant_id", "event_items")).fetchall()),
            "quarantine": {
                (t, r): n
                for t, r, n in con.execute(
                    count.format("topic_tenant, reason", "quarantine")
                ).fetchall()
            },
        }
    finally:
        con.close()


def assert_lake(settings: Settings, exp: Expected) -> None:
    """The Delta tables, read by an engine other than the writer, hold exactly the expected
    rows: per tenant silver rows = distinct event ids = the published ones, revenue, bronze and
    item rows; quarantined messages per reason."""
    lake = lake_numbers(settings)
    assert lake["silver"] == {
        t: (len(exp.events[t]), len(exp.events[t]), exp.revenue(t)) for t in exp.tenants
    }
    assert lake["silver_ids"] == {t: exp.event_ids(t) for t in exp.tenants}
    assert lake["bronze"] == exp.bronze_rows
    assert lake["event_items"] == exp.item_rows
    assert lake["quarantine"] == exp.quarantine
