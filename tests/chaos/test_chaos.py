"""The chaos suite (`make test-chaos`): the end-to-end run with one fault injected per test.

Each test starts the whole platform as `make run` does, registers the tenants and their tokens
through the API, publishes the end-to-end mix in chunks (the generator's publisher, with a
pause between chunks), lets the stream consume it, and loads it with `load_postgres` through
Airflow's REST API, while one kind of fault hits at a seeded random moment of its phase:

- `publishing`: while the generator publishes (the broker restarting under it);
- `consuming`: while the stream consumes (it runs small batches so consumption takes a while);
- `loading`: while a `load_postgres` run's task runs (a Spark Connect client of the platform's
  server); `load_task_sigkill` always lands: it triggers another run when the load it waited
  for ended first.

supervisord restarts what was killed. The end state must equal the fault-free one exactly:
the same `/metrics`, `/events`, `/usage` and quarantine counts through the API with tenant
tokens, and the same Delta tables read by DuckDB (`tests.e2e.harness.assert_end_state`).

A run logs its seed and each fault's moment; `LAKEHOUSE_CHAOS_SEED=<seed> make test-chaos`
replays it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from include.db import connect
from include.embedded import cli, supervisor
from jobs.load.job import PROCESS_TITLE
from tests.e2e.harness import (
    APPS,
    LOAD_DAG,
    PROGRAMS,
    TENANTS,
    Platform,
    Published,
    assert_end_state,
    build_mix,
    expected,
    publish,
)

log = logging.getLogger(__name__)

SEED = int(os.environ.get("LAKEHOUSE_CHAOS_SEED", "20261126"))
COUNT = 3_000
CHUNKS = 8
PAUSE_S = 1.0
LOGS = Path(__file__).resolve().parents[2] / "test-artifacts" / "chaos-logs"
# One whole platform run per test, with a fault and its recovery: time each generously.
pytestmark = pytest.mark.timeout(2_400)


@dataclass(frozen=True)
class Fault:
    """One kind of fault: the phase it hits and what it does (returns what it did)."""

    name: str
    phase: str
    inject: Callable[[Platform], str]


def _kill(program: str) -> Callable[[Platform], str]:
    def inject(platform: Platform) -> str:
        pid = platform.kill(program, signal.SIGKILL)
        # Until supervisord has seen the death: a wait for RUNNING right after the signal could
        # still see the killed process's state and measure no recovery at all.
        deadline = time.monotonic() + 60
        while platform.pid(program) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"SIGKILL {program} (pid {pid})"

    return inject


def _load_task_processes() -> list[psutil.Process]:
    """The processes of a running load: the Airflow task that runs ``jobs.load.job`` as a Spark
    Connect client (it titles itself ``lakehouse-load: ...``), or a ``spark-submit`` of the job."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if PROCESS_TITLE in cmdline or "jobs/load/job.py" in cmdline:
            found.append(process)
    return found


# A load of the mix takes seconds on the long-lived server: it can end between the moment it is
# seen and the signal. Each miss triggers another run; the fault fails if it never lands.
LOAD_KILL_ATTEMPTS = 5


def _kill_load_task(platform: Platform) -> str:
    for attempt in range(1, LOAD_KILL_ATTEMPTS + 1):
        processes = _load_task_processes()
        if not processes:
            platform.airflow.trigger(LOAD_DAG)
            _wait_for_load_task()
            processes = _load_task_processes()
        killed = []
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
                killed.append(process.pid)
        if killed:
            return f"SIGKILL load task processes {killed} (attempt {attempt})"
    raise AssertionError(f"no load was running at any of {LOAD_KILL_ATTEMPTS} attempts")


def _restart_everything(platform: Platform) -> str:
    """A crash of the whole host: SIGKILL supervisord and every process it runs, then start
    the platform again on the same state directory, as `make run` after a reboot would."""
    pid = supervisor.supervisord_pid(platform.paths)
    assert pid is not None
    tree = psutil.Process(pid)
    victims = [tree, *tree.children(recursive=True)]
    for process in victims:
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    # What a crashed supervisord leaves behind would make the next one look alive.
    platform.paths.supervisor_pidfile.unlink(missing_ok=True)
    platform.paths.supervisor_socket.unlink(missing_ok=True)
    cli.up(platform.settings, apps=APPS)
    return f"SIGKILL supervisord (pid {pid}) and {len(victims) - 1} processes; started again"


FAULTS = [
    Fault("stream_sigkill", "consuming", _kill("stream")),
    Fault("broker_sigkill", "consuming", _kill("pulsar")),
    Fault("postgres_sigkill", "consuming", _kill("postgres")),
    Fault("scheduler_sigkill", "loading", _kill("airflow-scheduler")),
    Fault("load_task_sigkill", "loading", _kill_load_task),
    Fault("full_restart", "consuming", _restart_everything),
    Fault("broker_restart_while_publishing", "publishing", _kill("pulsar")),
]


class _Timer:
    """Fires ``fault`` once, ``delay_s`` after ``start()``, on its own thread."""

    def __init__(self, platform: Platform, fault: Fault, delay_s: float) -> None:
        self.outcome: str | None = None
        self.fired_at: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Timer(delay_s, self._fire, args=(platform, fault))
        self._delay_s = delay_s

    def _fire(self, platform: Platform, fault: Fault) -> None:
        try:
            self.fired_at = time.monotonic()
            self.outcome = fault.inject(platform)
            log.info("chaos: %s after %.2f s: %s", fault.name, self._delay_s, self.outcome)
        except BaseException as error:  # reported on the test's thread by join()
            self.error = error

    def start(self) -> None:
        self._thread.start()

    def join(self) -> tuple[str, float]:
        """What the fault did and when (``time.monotonic()``) it fired."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.outcome is not None and self.fired_at is not None
        return self.outcome, self.fired_at


def _record_recovery(fault: Fault, outcome: str, seconds: dict[str, float]) -> None:
    """Log how long each stage took to recover and keep it next to the run's logs, which is
    where docs/operations.md takes its recovery times from."""
    log.info("chaos: %s recovered: %s", fault.name, seconds)
    LOGS.mkdir(parents=True, exist_ok=True)
    entry = {"fault": fault.name, "seed": SEED, "outcome": outcome, "seconds": seconds}
    with (LOGS / "recovery.jsonl").open("a") as out:
        out.write(json.dumps(entry) + "\n")


def _wait_for_load_task(timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _load_task_processes():
            return
        time.sleep(0.05)
    raise AssertionError("no load_postgres task started")


def _wait_first_batch(platform: Platform, timeout_s: float = 600) -> None:
    """Until the stream has committed a batch: on a busy machine its start can outlast the
    publishing, and a fault meant for consumption would then only hit a starting job."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connect(platform.settings) as conn:
            row = conn.execute("SELECT count(*) FROM stream_batches").fetchone()
        if row is not None and row[0] > 0:
            return
        time.sleep(0.5)
    raise AssertionError("the stream committed no batch")


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_the_end_state_survives(fault: Fault) -> None:
    rng = random.Random(f"{SEED}/{fault.name}")
    log.info("chaos: seed %s, fault %s in phase %s", SEED, fault.name, fault.phase)
    messages = build_mix(TENANTS, SEED, COUNT)
    exp = expected(Published(SEED, TENANTS, tuple(messages)))
    # Small batches: consumption then spans many micro-batches for a fault to land in.
    with Platform.start(stream_max_records_per_batch=250) as platform:
        try:
            tokens = platform.register_tenants(TENANTS)
            timer: _Timer | None = None
            if fault.phase == "publishing":
                timer = _Timer(platform, fault, rng.uniform(0.2, CHUNKS * PAUSE_S))
                timer.start()
            publish(
                platform.settings,
                messages,
                chunks=CHUNKS,
                between_chunks=lambda _index: time.sleep(PAUSE_S),
            )
            if fault.phase == "consuming":
                _wait_first_batch(platform)
                timer = _Timer(platform, fault, rng.uniform(0.5, 6.0))
                timer.start()
            if fault.phase == "loading":
                platform.wait_consumed(exp.messages, timeout_s=900)
                platform.airflow.wait_for_dags({LOAD_DAG}, timeout_s=600)
                platform.airflow.trigger(LOAD_DAG)
                _wait_for_load_task()
                timer = _Timer(platform, fault, rng.uniform(0.0, 5.0))
                timer.start()
            assert timer is not None
            outcome, fired_at = timer.join()
            log.info("chaos: injected: %s", outcome)
            recovery: dict[str, float] = {}
            platform.wait_running(PROGRAMS, timeout_s=600)
            recovery["all_running"] = round(time.monotonic() - fired_at, 1)
            platform.wait_api(timeout_s=300)
            recovery["api_ready"] = round(time.monotonic() - fired_at, 1)
            platform.wait_consumed(exp.messages, timeout_s=900)
            recovery["all_consumed"] = round(time.monotonic() - fired_at, 1)
            platform.wait_loaded(timeout_s=900, max_failed_runs=2)
            recovery["all_loaded"] = round(time.monotonic() - fired_at, 1)
            _record_recovery(fault, outcome, recovery)
            assert_end_state(platform, tokens, exp)
        finally:
            target = LOGS / fault.name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(platform.paths.logs, target, dirs_exist_ok=True)
