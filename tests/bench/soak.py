"""``make soak``: the whole platform under a steady load for minutes, sampled as it runs.

Starts every component the way ``make run`` does (supervisord with PostgreSQL, pulsar-lite, the
Spark streaming job, the API and, unless ``--no-airflow``, Airflow with ``load_postgres`` on its
one-minute schedule) on free ports in a temporary state directory, registers ``--tenants``
tenants through the API as admin and creates a tenant token for each, and waits for the stream's
first micro-batch (its JVM start is not measured). Then, for ``--minutes``:

* the project's generator (``python -m generator continuous``, ``--processes`` processes, each
  paced at its share of ``--rate``) publishes events, with a small share of duplicates and
  malformed messages so that deduplication and quarantine are exercised;
* ``--clients`` API clients, each with its tenant's token, query ``/metrics`` (per minute, over
  the soak's window) and ``/events`` (first pages and next pages) back to back, ``--think``
  seconds apart;
* every ``--interval`` seconds a sample records: messages the stream committed
  (``stream_batches``), the stream heartbeat's lag, the RSS, PSS and CPU time of every
  supervised program (process and descendants), the generators' and the machine's, and the API
  latencies and errors since the previous sample.

When publishing stops the clients keep querying while the stream drains (bounded by
``--drain-timeout``); with Airflow a last ``load_postgres`` run is triggered. Then the totals
must be exact: per tenant, the distinct valid events the generators published equal the
speed layer's counts, ``/metrics`` totals (tenant token), the silver Delta table's distinct
event ids and, with Airflow, the loaded ``events`` rows; quarantined rows equal the malformed
messages published.

What is reported (stdout: Markdown tables, then a JSON summary; progress on stderr; every
sample in ``--out``), with the pass criteria it is judged by:

* **lag bounded**: lag = messages published minus messages committed by the stream. Bounded
  when its least-squares slope over the second half of the publishing phase is at most 1 % of
  the publishing rate (a lag that only oscillates has a slope near 0);
* **memory flat**: least-squares slopes of each program's RSS and PSS (MiB/min) over the second
  half of the loaded phase (publishing and draining); flat when the PSS slope is at most
  ``max(2 MiB/min, 0.5 % of its mean PSS per minute)`` (PSS splits shared pages between the
  processes sharing them, so touching more of PostgreSQL's shared buffers is no growth);
* **no API errors**: every answer a 200;
* **exact totals** as above, after the stream drained.

The pass criteria are reported, not asserted: the soak always finishes (publishing, draining,
checking and stopping the platform are each bounded by a timeout).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg
import pyarrow.compute as pc
from deltalake import DeltaTable

from generator.catalog import merchant_profile
from include.embedded import supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from jobs.stream.sink import lake_caught_up
from tests.airflow_api import AirflowApi
from tests.services import embedded_platform, settings_env

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "test-artifacts" / "soak.json"
TARGET_RATE = 10_000.0  # events/s (issue #6)
TARGET_MINUTES = 10.0
LAG_SLOPE_SHARE = 0.01  # bounded: lag grows by at most 1 % of the publishing rate
FLAT_MIB_PER_MIN = 2.0  # flat: RSS grows by at most this, or by ...
FLAT_SHARE_PER_MIN = 0.005  # ... this share of its mean per minute, whichever is larger
LOAD_DAG = "load_postgres"
LOAD_JOB = "jobs/load/job.py"
# Not supervised programs: judged for neither flat memory nor leaks, shown for the record.
GENERATORS = "generator (soak's)"
LOAD_TASKS = "load_postgres Spark tasks"
MIB = 2**20


def _log(message: str) -> None:
    print(f"[soak {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 with fewer than two distinct points)."""
    if len(xs) < 2:
        return 0.0
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def percentile(values: Sequence[float], share: float) -> float:
    """The value at ``share`` of the sorted values (nearest rank); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def interpolate(points: Sequence[tuple[float, float]], t: float) -> float:
    """Linear interpolation in time-ordered ``points`` (held flat outside them)."""
    if not points:
        return 0.0
    if t <= points[0][0]:
        return points[0][1]
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


# -- publishing ----------------------------------------------------------------------------------


@dataclass
class GeneratorRun:
    """One ``python -m generator continuous`` process and what it reported."""

    tenants: list[str]
    rate: float
    process: subprocess.Popen[bytes]
    started: float
    # (epoch seconds, messages sent) from its progress log lines (every 10 s, and at the end).
    progress: list[tuple[float, int]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    reader: threading.Thread | None = None

    def read_progress(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if not line.startswith(b"{"):
                continue  # the Pulsar client's own log lines
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, ValueError):
                entry = orjson.loads(line)
                if entry.get("message") == "progress":
                    at = datetime.fromisoformat(entry["time"]).timestamp()
                    self.progress.append((at, int(entry["sent"])))

    def published_at(self, t: float) -> float:
        """Messages sent by ``t``: between progress lines, linearly interpolated. Publishing
        began when the first line's messages, at the paced rate, were still to be sent."""
        if not self.progress:
            return 0.0
        first_at, first_sent = self.progress[0]
        began = max(self.started, first_at - first_sent / self.rate)
        return interpolate([(began, 0.0), *((a, float(s)) for a, s in self.progress)], t)


def start_generators(
    settings: Settings, tenants: list[str], args: argparse.Namespace
) -> list[GeneratorRun]:
    """Start ``args.processes`` paced generator processes, splitting the tenants between them."""
    groups = [tenants[i :: args.processes] for i in range(min(args.processes, len(tenants)))]
    runs = []
    for index, group in enumerate(groups):
        rate = args.rate * len(group) / len(tenants)
        command = [
            sys.executable, "-m", "generator", "continuous",
            "--rate", f"{rate:g}", "--duration", f"{args.minutes * 60:g}",
            "--tenants", ",".join(group), "--seed", str(args.seed * 100 + index),
            "--duplicate-rate", f"{args.duplicate_rate:g}",
            "--malformed-rate", f"{args.malformed_rate:g}",
            "--producer-id", f"soak-{index}",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            env=settings_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        run = GeneratorRun(group, rate, process, time.time())
        run.reader = threading.Thread(target=run.read_progress, daemon=True)
        run.reader.start()
        runs.append(run)
    return runs


def finish_generators(runs: list[GeneratorRun], timeout_s: float) -> None:
    """Wait for every generator to end and read its JSON summary."""
    deadline = time.monotonic() + timeout_s
    for run in runs:
        try:
            run.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"generator {run.process.pid} overran its duration: stopping it (SIGTERM)")
            run.process.terminate()
            run.process.wait(timeout=120)
        assert run.process.stdout is not None
        out = run.process.stdout.read()
        if run.reader is not None:
            run.reader.join(timeout=10)
        try:
            run.summary = orjson.loads(out)
        except orjson.JSONDecodeError:
            _log(f"generator {run.process.pid} ended ({run.process.returncode}) with no summary")


# -- API clients ---------------------------------------------------------------------------------


@dataclass
class ApiClients:
    """``clients`` threads querying the API with tenant tokens until stopped."""

    base_url: str
    tokens: dict[str, str]
    clients: int
    think_s: float
    window_start: datetime
    # (epoch seconds at the answer, endpoint, latency in seconds, HTTP status or 0 on failure)
    records: list[tuple[float, str, float, int]] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        tenants = sorted(self.tokens)
        for number in range(self.clients):
            tenant = tenants[number % len(tenants)]
            thread = threading.Thread(target=self._run, args=(tenant, number), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _request(self, number: int, cursor: str | None) -> tuple[str, str, dict[str, str]]:
        if number % 2 == 0:
            now = datetime.now(UTC).replace(second=0, microsecond=0)
            end = now + timedelta(minutes=2)
            params = {
                "start": self.window_start.isoformat(),
                "end": end.isoformat(),
                "granularity": "minute",
            }
            return "metrics", "/metrics", params
        params = {"limit": "100"}
        if cursor is not None and number % 4 == 3:
            params["cursor"] = cursor
        return "events", "/events", params

    def _run(self, tenant: str, seed: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"}
        cursor: str | None = None
        number = seed
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=120) as client:
            while not self.stop.is_set():
                endpoint, path, params = self._request(number, cursor)
                number += 1
                started = time.perf_counter()
                status = 0
                try:
                    response = client.get(path, params=params)
                    status = response.status_code
                    if endpoint == "events" and status == 200:
                        cursor = response.json().get("next_cursor")
                    elif status != 200:
                        self._error(f"{path} {status}: {response.text[:300]}")
                except httpx.HTTPError as exc:
                    self._error(f"{path}: {exc!r}")
                latency = time.perf_counter() - started
                with self.lock:
                    self.records.append((time.time(), endpoint, latency, status))
                self.stop.wait(self.think_s)

    def _error(self, text: str) -> None:
        with self.lock:
            if len(self.error_samples) < 20:
                self.error_samples.append(text)

    def window(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """Requests, errors and latency percentiles (ms) per endpoint in ``(since, until]``."""
        with self.lock:
            records = [r for r in self.records if since < r[0] <= until]
        return summarize_requests(records)


def summarize_requests(
    records: Sequence[tuple[float, str, float, int]],
) -> dict[str, dict[str, float]]:
    """Requests, errors and latency percentiles (ms) per endpoint."""
    out = {}
    for endpoint in ("metrics", "events"):
        mine = [r for r in records if r[1] == endpoint]
        ms = [r[2] * 1_000 for r in mine]
        out[endpoint] = {
            "requests": len(mine),
            "errors": sum(1 for r in mine if r[3] != 200),
            "p50_ms": percentile(ms, 0.50),
            "p95_ms": percentile(ms, 0.95),
            "p99_ms": percentile(ms, 0.99),
            "max_ms": max(ms) if ms else math.nan,
        }
    return out


# -- sampling ------------------------------------------------------------------------------------


def _is_load_task(process: psutil.Process) -> bool:
    """A ``load_postgres`` task's Spark job (spark-submit, its JVM and Python driver)."""
    with contextlib.suppress(psutil.Error):
        return any(LOAD_JOB in part for part in process.cmdline())
    return False


def tree_usage(pids: Sequence[int], transient: dict[str, float] | None = None) -> dict[str, float]:
    """RSS and PSS (MiB) and CPU seconds of processes and all their descendants. CPU includes
    descendants that ended (their parent's ``children_*`` times). A ``load_postgres`` task's
    Spark job (a child of the scheduler while it runs) is added to ``transient`` instead."""
    usage = {"rss_mib": 0.0, "pss_mib": 0.0, "cpu_s": 0.0}
    todo: list[tuple[psutil.Process, dict[str, float]]] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            todo.append((psutil.Process(pid), usage))
    while todo:
        process, into = todo.pop()
        if transient is not None and into is usage and _is_load_task(process):
            into = transient
        with contextlib.suppress(psutil.Error):
            memory = process.memory_full_info()
            times = process.cpu_times()
            into["rss_mib"] = into.get("rss_mib", 0.0) + memory.rss / MIB
            into["pss_mib"] = into.get("pss_mib", 0.0) + memory.pss / MIB
            into["cpu_s"] = into.get("cpu_s", 0.0) + (
                times.user + times.system + times.children_user + times.children_system
            )
            todo += [(child, into) for child in process.children()]
    return usage


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def stream_progress(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What the stream committed so far, and its heartbeat."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(input_rows), 0), coalesce(sum(new_events), 0), "
        "coalesce(sum(quarantined_rows), 0) FROM stream_batches"
    ).fetchone()
    beat = conn.execute(
        "SELECT batch_id, extract(epoch FROM now() - updated_at), lag_seconds, rows_per_second "
        "FROM stream_heartbeat WHERE job = 'stream'"
    ).fetchone()
    assert row is not None
    return {
        "batches": int(row[0]),
        "consumed": int(row[1]),
        "new_events": int(row[2]),
        "quarantined": int(row[3]),
        "heartbeat_batch": None if beat is None else int(beat[0]),
        "heartbeat_age_s": None if beat is None else float(beat[1]),
        "heartbeat_lag_s": None if beat is None or beat[2] is None else float(beat[2]),
        "batch_rows_per_s": None if beat is None else float(beat[3]),
    }


@dataclass
class Sampler:
    """Samples the platform every ``interval`` seconds in a thread."""

    settings: Settings
    interval: float
    t_start: float
    api: ApiClients
    generators: list[GeneratorRun]
    samples: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "publish"
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failures: int = 0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)

    def _run(self) -> None:
        paths = StatePaths.under(self.settings.state_dir)
        previous = time.time()
        conn: psycopg.Connection[Any] | None = None
        while not self.stop.wait(max(0.0, previous + self.interval - time.time())):
            now = time.time()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.settings.pg_dsn, autocommit=True)
                sample = self.take(conn, paths, previous, now)
            except Exception as exc:  # a sampling hiccup must not end the soak
                self.failures += 1
                _log(f"sample failed: {exc!r}")
                if conn is not None:
                    conn.close()
                conn = None
                previous = now
                continue
            self.samples.append(sample)
            previous = now
            _log(
                f"{sample['phase']:<7} +{sample['elapsed_s']:6.0f} s  published "
                f"{sample['published_reported']:>10,}  committed {sample['consumed']:>10,}  "
                f"heartbeat lag {sample['heartbeat_lag_s'] or 0:6.1f} s  API "
                f"{sum(v['requests'] for v in sample['api'].values()):.0f} req "
                f"{sum(v['errors'] for v in sample['api'].values()):.0f} err"
            )
        if conn is not None:
            conn.close()

    def take(
        self, conn: psycopg.Connection[Any], paths: StatePaths, since: float, now: float
    ) -> dict[str, Any]:
        """One sample."""
        sample: dict[str, Any] = {"t": now, "elapsed_s": now - self.t_start, "phase": self.phase}
        sample |= stream_progress(conn)
        programs: dict[str, dict[str, float]] = {}
        transient: dict[str, float] = {"rss_mib": 0.0, "pss_mib": 0.0, "cpu_s": 0.0}
        sample["pids"] = {}
        for info in supervisor.process_info(paths):
            sample["pids"][info.name] = info.pid
            if info.pid:
                programs[info.name] = tree_usage([info.pid], transient)
        programs[LOAD_TASKS] = transient
        live = [g.process.pid for g in self.generators if g.process.poll() is None]
        programs[GENERATORS] = tree_usage(live)
        sample["programs"] = programs
        sample["machine_busy_s"] = machine_busy_seconds()
        sample["published_reported"] = sum(g.progress[-1][1] for g in self.generators if g.progress)
        sample["api"] = self.api.window(since, now)
        return sample


# -- the soak ------------------------------------------------------------------------------------


def register_tenants(base_url: str, admin_token: str, tenants: list[str]) -> dict[str, str]:
    """Register the tenants through the API as admin and create a tenant token for each."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    tokens = {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        deadline = time.monotonic() + 180
        while True:
            try:
                if client.get("/tenants").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not accept the admin token within 180 s")
            time.sleep(1)
        for tenant in tenants:
            profile = merchant_profile(tenant)
            body = {"tenant_id": tenant, "name": profile.display_name, "currency": profile.currency}
            created = client.post("/tenants", json=body)
            if created.status_code != 201:
                raise RuntimeError(f"POST /tenants {tenant}: {created.status_code} {created.text}")
            token = client.post(
                f"/tenants/{tenant}/tokens",
                json={"role": "tenant", "expires_at": None, "name": "soak"},
            )
            if token.status_code != 201:
                raise RuntimeError(f"token for {tenant}: {token.status_code} {token.text}")
            tokens[tenant] = str(token.json()["token"])
    return tokens


def wait_stream_ready(settings: Settings, timeout_s: float) -> None:
    """Wait until the streaming job committed its first micro-batch (its JVM is up and it reads
    the tenants' topics), so that the soak measures the running job, not its start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(settings.pg_dsn, autocommit=True) as conn,
        ):
            if stream_progress(conn)["heartbeat_batch"] is not None:
                return
        time.sleep(2)
    _log(f"the stream committed no batch within {timeout_s:.0f} s: publishing anyway")


def wait_drained(settings: Settings, sent: int, timeout_s: float) -> tuple[bool, float]:
    """Wait until the stream committed ``sent`` messages and the lake holds the last batch;
    return whether it did and when (epoch seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
                consumed = stream_progress(conn)["consumed"]
            if consumed >= sent and lake_caught_up(settings.lake_dir, settings.pg_dsn):
                return True, time.time()
        time.sleep(2)
    return False, time.time()


def final_load(airflow: AirflowApi, timeout_s: float) -> dict[str, Any]:
    """Trigger ``load_postgres`` once the stream drained, wait for it; and every run's states."""
    started = time.monotonic()
    run_id = airflow.trigger(LOAD_DAG)
    try:
        state = airflow.wait_for_run(LOAD_DAG, run_id, timeout_s=timeout_s)
    except TimeoutError:
        state = "timed out"
    runs = airflow.get(f"/dags/{LOAD_DAG}/dagRuns?limit=1000")["dag_runs"]
    states: dict[str, int] = {}
    durations = []
    for run in runs:
        states[run["state"]] = states.get(run["state"], 0) + 1
        if run.get("start_date") and run.get("end_date"):
            start = datetime.fromisoformat(run["start_date"])
            durations.append((datetime.fromisoformat(run["end_date"]) - start).total_seconds())
    return {
        "final_run": state,
        "final_run_seconds": time.monotonic() - started,
        "runs_by_state": states,
        "run_seconds_median": statistics.median(durations) if durations else None,
        "run_seconds_max": max(durations) if durations else None,
    }


def totals(
    settings: Settings,
    base_url: str,
    tokens: dict[str, str],
    window_start: datetime,
    loaded: bool,
) -> dict[str, Any]:
    """Per tenant: speed layer, /metrics totals, silver distinct ids, loaded events; and the
    stream's new events and quarantined rows."""
    tenants = sorted(tokens)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        speed: dict[str, int] = dict(
            conn.execute(
                "SELECT tenant_id, sum(events)::bigint FROM stream_minute_metrics "
                "WHERE tenant_id = ANY(%s) GROUP BY 1",
                (tenants,),
            ).fetchall()
        )
        events: dict[str, int] = (
            dict(
                conn.execute(
                    "SELECT tenant_id, count(*) FROM events WHERE tenant_id = ANY(%s) GROUP BY 1",
                    (tenants,),
                ).fetchall()
            )
            if loaded
            else {}
        )
        progress = stream_progress(conn)
    silver = DeltaTable(str(settings.lake_dir / "silver")).to_pyarrow_table(
        columns=["tenant_id", "event_id"]
    )
    grouped = silver.group_by("tenant_id").aggregate(
        [("event_id", "count"), ("event_id", "count_distinct")]
    )
    lake = {
        t: (int(n), int(d))
        for t, n, d in zip(
            grouped.column("tenant_id").to_pylist(),
            grouped.column("event_id_count").to_pylist(),
            grouped.column("event_id_count_distinct").to_pylist(),
            strict=True,
        )
    }
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    api = {}
    for tenant in tenants:
        response = httpx.get(
            f"{base_url}/metrics",
            params={
                "start": window_start.replace(minute=0).isoformat(),
                "end": end.isoformat(),
                "granularity": "hour",
            },
            headers={"Authorization": f"Bearer {tokens[tenant]}"},
            timeout=120,
        )
        api[tenant] = response.json()["totals"]["events"] if response.status_code == 200 else None
    return {
        "per_tenant": {
            t: {
                "speed_layer": int(speed.get(t, 0)),
                "api_metrics": api[t],
                "silver_rows": lake.get(t, (0, 0))[0],
                "silver_distinct": lake.get(t, (0, 0))[1],
                "loaded_events": int(events.get(t, 0)) if loaded else None,
            }
            for t in tenants
        },
        "stream_new_events": progress["new_events"],
        "stream_quarantined": progress["quarantined"],
        "stream_consumed": progress["consumed"],
        "silver_total_rows": silver.num_rows,
        "silver_null_ids": int(pc.sum(pc.is_null(silver.column("event_id"))).as_py() or 0),
    }


def analyse(
    samples: list[dict[str, Any]],
    generators: list[GeneratorRun],
    t_start: float,
    t_stop: float,
    t_drained: float | None,
    consumed_total: int | None,
    rate: float,
) -> dict[str, Any]:
    """Rates, lag and memory slopes from the samples (``consumed_total``: what the stream had
    committed when it drained)."""
    for sample in samples:
        sample["elapsed_s"] = sample["t"] - t_start
        sample["published"] = sum(g.published_at(sample["t"]) for g in generators)
        sample["lag_messages"] = sample["published"] - sample["consumed"]
    publish = [s for s in samples if s["phase"] == "publish"]
    loaded = [s for s in samples if s["phase"] in ("publish", "drain")]
    second_half = [s for s in publish if s["t"] >= t_start + (t_stop - t_start) / 2]
    sent = sum(int((g.summary or {}).get("sent", 0)) for g in generators)
    seconds = max(float((g.summary or {}).get("seconds", 0.0)) for g in generators)
    lag_slope = slope([s["t"] for s in second_half], [s["lag_messages"] for s in second_half])
    at_stop = max((s for s in samples if s["t"] <= t_stop), key=lambda s: s["t"], default=None)
    consumed_at_stop = at_stop["consumed"] if at_stop else 0
    t_at_stop = at_stop["t"] if at_stop else t_stop
    committed = [s for s in publish if s["batches"] > 0]
    committed_rate = slope([s["t"] for s in committed], [s["consumed"] for s in committed])
    drain_rate = None
    if t_drained is not None and consumed_total is not None and t_drained > t_at_stop:
        drain_rate = (consumed_total - consumed_at_stop) / (t_drained - t_at_stop)
    else:  # not drained: the rate over the drain phase it waited through
        drain = [s for s in samples if s["phase"] == "drain"]
        if drain and drain[-1]["t"] > t_at_stop:
            drain_rate = (drain[-1]["consumed"] - consumed_at_stop) / (drain[-1]["t"] - t_at_stop)
    heartbeat = [s["heartbeat_lag_s"] for s in publish if s["heartbeat_lag_s"] is not None]
    lags = [s["lag_messages"] for s in loaded]
    memory = {}
    mem_half = (
        [s for s in loaded if s["t"] >= (loaded[0]["t"] + loaded[-1]["t"]) / 2] if loaded else []
    )
    for name in sorted({n for s in loaded for n in s["programs"]}):
        if name in (GENERATORS, LOAD_TASKS):
            continue
        points = [
            (s["t"] / 60, s["programs"][name]["rss_mib"]) for s in loaded if name in s["programs"]
        ]
        half = [
            (s["t"] / 60, s["programs"][name]["rss_mib"]) for s in mem_half if name in s["programs"]
        ]
        pss = [
            (s["t"] / 60, s["programs"][name]["pss_mib"]) for s in mem_half if name in s["programs"]
        ]
        mean = statistics.fmean(v for _, v in points) if points else 0.0
        mean_pss = statistics.fmean(v for _, v in pss) if pss else 0.0
        pss_late = slope([t for t, _ in pss], [v for _, v in pss])
        memory[name] = {
            "mean_rss_mib": mean,
            "max_rss_mib": max((v for _, v in points), default=0.0),
            "slope_mib_per_min": slope([t for t, _ in points], [v for _, v in points]),
            "slope_second_half_mib_per_min": slope([t for t, _ in half], [v for _, v in half]),
            "mean_pss_mib": mean_pss,
            "pss_slope_second_half_mib_per_min": pss_late,
            # Judged on PSS: RSS counts every shared page a process touched (a PostgreSQL
            # backend reading more of the shared buffers "grows" without using more memory).
            "flat": pss_late <= max(FLAT_MIB_PER_MIN, FLAT_SHARE_PER_MIN * mean_pss),
        }
    cpu: dict[str, float] = {}
    if at_stop is not None and publish:
        first = publish[0]
        span = at_stop["t"] - first["t"]
        window = [s for s in samples if first["t"] <= s["t"] <= at_stop["t"]]
        for a, b in itertools.pairwise(window):
            for name, usage in b["programs"].items():
                if name == LOAD_TASKS or span <= 0:
                    continue
                same = a.get("pids", {}).get(name) == b.get("pids", {}).get(name)
                before = a["programs"].get(name, {}).get("cpu_s", 0.0) if same else 0.0
                # A restarted program's CPU counts from its new start.
                cpu[name] = cpu.get(name, 0.0) + max(0.0, usage["cpu_s"] - before) / span
        if span > 0:
            machine = (at_stop["machine_busy_s"] - first["machine_busy_s"]) / span
            # Whatever else ran on the machine meanwhile (the soak's own sampling and clients, or
            # another user's work on a shared machine).
            cpu["not the platform's programs"] = max(0.0, machine - sum(cpu.values()))
            cpu["machine (all processes)"] = machine
    restarts: dict[str, int] = {}
    last_pid: dict[str, int] = {}
    for sample in samples:
        for name, pid in sample.get("pids", {}).items():
            if pid and last_pid.setdefault(name, pid) != pid:
                restarts[name] = restarts.get(name, 0) + 1
                last_pid[name] = pid
    return {
        "restarts": restarts,
        "publish_stop_elapsed_s": t_stop - t_start,
        "target_rate": rate,
        "published": sent,
        "publish_seconds": seconds,
        "published_rate": sent / seconds if seconds else 0.0,
        "committed_rate_while_publishing": committed_rate,
        "drain_rate": drain_rate,
        "lag_max_messages": max(lags, default=0.0),
        "lag_at_stop_messages": at_stop["lag_messages"] if at_stop else None,
        "lag_slope_second_half_per_s": lag_slope,
        "lag_bounded": lag_slope <= LAG_SLOPE_SHARE * (sent / seconds if seconds else rate),
        "heartbeat_lag_max_s": max(heartbeat, default=None),
        "heartbeat_lag_at_stop_s": at_stop["heartbeat_lag_s"] if at_stop else None,
        "drain_seconds": None if t_drained is None else t_drained - t_stop,
        "memory": memory,
        "cpu_cores_while_publishing": cpu,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The soak; returns its summary (samples included)."""
    tenants = [f"soak_{name}" for name in ("alpha", "beta", "gamma", "delta", "epsilon",
                                           "zeta", "eta", "theta")][: args.tenants]  # fmt: skip
    apps: tuple[str, ...] = ("stream", "api")
    if args.airflow:
        apps += supervisor.BATCH_APPS
    _log(f"starting the platform: {', '.join(apps)}")
    with embedded_platform(apps=apps) as settings:
        base_url = f"http://{settings.api_host}:{settings.api_port}"
        tokens = register_tenants(base_url, settings.admin_token.get_secret_value(), tenants)
        _log(f"registered {len(tokens)} tenants with tokens: {', '.join(tokens)}")
        airflow = None
        if args.airflow:
            airflow = AirflowApi.login(settings, timeout_s=600)
            dags = airflow.wait_for_dags({LOAD_DAG}, timeout_s=300)
            if dags.get(LOAD_DAG, {}).get("is_paused"):
                httpx.patch(
                    f"{airflow.base_url}/api/v2/dags/{LOAD_DAG}",
                    json={"is_paused": False},
                    headers={"Authorization": f"Bearer {airflow.token}"},
                    timeout=30,
                ).raise_for_status()
            _log(f"Airflow is up; {LOAD_DAG} runs on its schedule ({settings.load_schedule})")
        wait_stream_ready(settings, timeout_s=600)
        _log("the stream committed its first micro-batch")
        t_start = time.time()
        window_start = datetime.fromtimestamp(t_start, UTC).replace(
            second=0, microsecond=0
        ) - timedelta(minutes=10)
        clients = ApiClients(base_url, tokens, args.clients, args.think, window_start)
        generators = start_generators(settings, tenants, args)
        clients.start()
        sampler = Sampler(settings, args.interval, t_start, clients, generators)
        sampler.start()
        _log(f"publishing {args.rate:,.0f} events/s for {args.minutes:g} min")
        finish_generators(generators, timeout_s=args.minutes * 60 + 300)
        t_stop = time.time()
        sent = sum(int((g.summary or {}).get("sent", 0)) for g in generators)
        sampler.phase = "drain"
        _log(f"publishing done: {sent:,} messages; draining (at most {args.drain_timeout:g} s)")
        drained, t_drained = wait_drained(settings, sent, args.drain_timeout)
        sampler.phase = "after"
        clients.finish()
        _log("drained" if drained else "NOT drained within the timeout")
        load = None
        if airflow is not None and drained:
            _log(f"triggering a last {LOAD_DAG} run")
            load = final_load(airflow, timeout_s=args.load_timeout)
            _log(f"last load: {load['final_run']}")
        time.sleep(args.interval)  # one sample after the end
        sampler.finish()
        end_totals = totals(settings, base_url, tokens, window_start, loaded=load is not None)
    summary = analyse(
        sampler.samples,
        generators,
        t_start,
        t_stop,
        t_drained if drained else None,
        end_totals["stream_consumed"],
        args.rate,
    )
    published: dict[str, dict[str, int]] = {}
    for g in generators:
        published |= (g.summary or {}).get("per_tenant", {})
    valid = {t: int(published.get(t, {}).get("valid", 0)) for t in tenants}
    malformed = sum(int(p.get("malformed", 0)) for p in published.values())
    checks = {}
    for tenant in tenants:
        got = end_totals["per_tenant"][tenant]
        checks[tenant] = (
            all(v == valid[tenant] for k, v in got.items() if k != "silver_rows" and v is not None)
            and got["silver_rows"] == got["silver_distinct"]
        )
    quarantine_ok = end_totals["stream_quarantined"] == malformed
    summary |= {
        "started_at": datetime.fromtimestamp(t_start, UTC).isoformat(),
        "cores": os.cpu_count(),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "tenants": tenants,
        "drained": drained,
        "published_valid": valid,
        "published_malformed": malformed,
        "published_by_kind": published,
        "generator_failed": sum(int((g.summary or {}).get("failed", 0)) for g in generators),
        "totals": end_totals,
        "totals_exact": drained and all(checks.values()) and quarantine_ok,
        "totals_exact_per_tenant": checks,
        "quarantine_exact": quarantine_ok,
        "load_postgres": load,
        "api": summarize_requests(clients.records),
        "api_error_samples": clients.error_samples,
        "sample_failures": sampler.failures,
    }
    summary["api_errors"] = sum(int(v["errors"]) for v in summary["api"].values())
    summary["memory_flat"] = all(m["flat"] for m in summary["memory"].values())
    summary["samples"] = sampler.samples
    return summary


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}{unit}"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def print_report(summary: dict[str, Any]) -> None:
    """Markdown tables on stdout."""
    config = summary["config"]
    minutes = summary["publish_seconds"] / 60
    print(
        f"\nSoak: {config['rate']:,.0f} events/s requested for {config['minutes']:g} min, "
        f"{len(summary['tenants'])} tenants, {config['clients']} API clients, "
        f"Airflow {'on' if config['airflow'] else 'off'}, {os.cpu_count()} cores, "
        f"started {summary['started_at']}\n"
    )
    print("| measure | measured | target |")
    print("| --- | ---: | ---: |")
    print(
        f"| published events/s (generator, paced) | {_fmt(summary['published_rate'])} "
        f"({summary['published']:,} in {minutes:.1f} min) | {TARGET_RATE:,.0f} for "
        f"≥ {TARGET_MINUTES:g} min: "
        f"{_met(summary['published_rate'] >= 0.99 * TARGET_RATE and minutes >= TARGET_MINUTES)} |"
    )
    print(
        f"| stream committed events/s while publishing | "
        f"{_fmt(summary['committed_rate_while_publishing'])} | keeps up with the rate: "
        f"{_met(summary['committed_rate_while_publishing'] >= 0.99 * summary['published_rate'])} |"
    )
    print(f"| stream committed events/s while draining the backlog | "
          f"{_fmt(summary['drain_rate'])} | — |")  # fmt: skip
    print(
        f"| lag (published - committed): max / at the end of publishing | "
        f"{_fmt(summary['lag_max_messages'])} / {_fmt(summary['lag_at_stop_messages'])} "
        "messages | — |"
    )
    print(
        f"| lag slope over the second half of publishing | "
        f"{_fmt(summary['lag_slope_second_half_per_s'])} messages/s | bounded (≤ "
        f"{LAG_SLOPE_SHARE:.0%} of the rate): {_met(summary['lag_bounded'])} |"
    )
    print(
        f"| stream heartbeat lag: max / at the end of publishing | "
        f"{_fmt(summary['heartbeat_lag_max_s'], 1)} / "
        f"{_fmt(summary['heartbeat_lag_at_stop_s'], 1)} s | — |"
    )
    print(
        f"| drain time after publishing stopped | {_fmt(summary['drain_seconds'])} s | "
        f"drains: {_met(summary['drained'])} |"
    )
    api = summary["api"]
    for endpoint, row in api.items():
        print(
            f"| API `/{endpoint}` (tenant tokens): requests, errors, p50 / p95 / p99 | "
            f"{row['requests']:,}, {row['errors']}, {_fmt(row['p50_ms'])} / "
            f"{_fmt(row['p95_ms'])} / {_fmt(row['p99_ms'])} ms | 0 errors: "
            f"{_met(row['errors'] == 0)} |"
        )
    print(
        f"| memory of every process flat | {sum(m['flat'] for m in summary['memory'].values())} "
        f"of {len(summary['memory'])} flat | {_met(summary['memory_flat'])} |"
    )
    restarts = ", ".join(f"{name} {n}" for name, n in sorted(summary["restarts"].items()))
    print(f"| programs restarted by supervisord (a new pid) | {restarts or 'none'} | — |")
    print(
        f"| exact totals after draining | "
        f"{'equal' if summary['totals_exact'] else 'DIFFERENT (see below)'} | "
        f"{_met(summary['totals_exact'])} |"
    )
    print("\n| program | mean RSS | max RSS | RSS slope, all | RSS slope, 2nd half | mean PSS | "
          "PSS slope, 2nd half | flat (PSS) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, m in summary["memory"].items():
        print(
            f"| {name} | {m['mean_rss_mib']:,.0f} MiB | {m['max_rss_mib']:,.0f} MiB | "
            f"{m['slope_mib_per_min']:+.1f} MiB/min | {m['slope_second_half_mib_per_min']:+.1f} "
            f"MiB/min | {m['mean_pss_mib']:,.0f} MiB | "
            f"{m['pss_slope_second_half_mib_per_min']:+.1f} MiB/min | "
            f"{'yes' if m['flat'] else '**no**'} |"
        )
    cpu = summary["cpu_cores_while_publishing"]
    if cpu:
        print("\n| CPU cores used while publishing | cores |")
        print("| --- | ---: |")
        for name, cores in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {cores:.2f} |")
    print("\n| tenant | published valid | speed layer | `/metrics` | silver distinct (rows) | "
          "loaded `events` | exact |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for tenant, got in summary["totals"]["per_tenant"].items():
        print(
            f"| {tenant} | {summary['published_valid'][tenant]:,} | {got['speed_layer']:,} | "
            f"{_fmt(got['api_metrics'])} | {got['silver_distinct']:,} ({got['silver_rows']:,}) | "
            f"{_fmt(got['loaded_events'])} | "
            f"{'yes' if summary['totals_exact_per_tenant'][tenant] else '**no**'} |"
        )
    load = summary["load_postgres"]
    if load is not None:
        states = ", ".join(f"{n} {state}" for state, n in sorted(load["runs_by_state"].items()))
        print(
            f"\n`load_postgres` runs during the soak: {states} (median "
            f"{_fmt(load['run_seconds_median'])} s, longest {_fmt(load['run_seconds_max'])} s); "
            f"the last one, triggered after the stream drained: {load['final_run']}."
        )
    print(
        f"\nQuarantined rows {summary['totals']['stream_quarantined']:,}, malformed messages "
        f"published {summary['published_malformed']:,}: "
        f"{'equal' if summary['quarantine_exact'] else '**different**'}."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="events/s to publish")
    parser.add_argument("--minutes", type=float, default=TARGET_MINUTES, help="publishing time")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--tenants", type=int, default=4, choices=range(1, 9), help="tenants")
    parser.add_argument("--processes", type=int, default=2, help="generator processes")
    parser.add_argument("--clients", type=int, default=4, help="concurrent API clients")
    parser.add_argument(
        "--think", type=float, default=0.2, help="seconds between a client's requests"
    )
    parser.add_argument("--seed", type=int, default=6, help="generator seed")
    parser.add_argument("--duplicate-rate", type=float, default=0.01, help="share of duplicates")
    parser.add_argument("--malformed-rate", type=float, default=0.001, help="share not JSON")
    parser.add_argument(
        "--drain-timeout", type=float, help="seconds to wait for the stream to drain "
        "(default: 3 times the publishing time, at least 10 minutes)"
    )  # fmt: skip
    parser.add_argument("--load-timeout", type=float, default=1200, help="last load's timeout")
    parser.add_argument(
        "--no-airflow", dest="airflow", action="store_false", help="without Airflow's loads"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="samples and summary (JSON)")
    args = parser.parse_args(argv)
    if args.drain_timeout is None:
        args.drain_timeout = max(600.0, 3 * args.minutes * 60)
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the soak, write every sample to ``--out``, print the tables and the summary."""
    args = parse_args(argv)
    summary = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    option = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    args.out.write_bytes(orjson.dumps(summary, option=option, default=str))
    _log(f"samples written to {args.out}")
    print_report(summary)
    brief = {k: v for k, v in summary.items() if k != "samples"}
    brief["samples_file"] = str(args.out)
    print("\n" + orjson.dumps(brief, option=option, default=str).decode())


if __name__ == "__main__":
    main()
