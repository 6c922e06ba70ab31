"""pytest plugin for a run with the clock moved ahead: ``make test-clock-shift``.

The run is started under Debian's ``faketime`` (libfaketime preloaded), so every process the
tests start inherits the shifted clock: PostgreSQL's ``now()``, Spark, Airflow's scheduler and
DAGs, the API, the generator. Two programs are kept on the real clock:

- pulsar-lite deadlocks at start under libfaketime (its jemalloc and libfaketime's symbol
  lookups both initialise inside ``malloc``); it needs no shift, since Pulsar producers stamp a
  message's publish time.
- The JVM (Spark, with the Python workers and drivers it starts): its ``Thread.sleep`` hangs
  under libfaketime (seen: the streaming query stopped for good after two micro-batches,
  asleep in ``MicroBatchExecution``). Spark's own clock only stamps ingest times and lags; the
  event-time rules the stream applies compare event times with publish times, which the
  shifted producers stamp, and every other rule of now (archive_lake, maintain_postgres,
  PostgreSQL's ``now()``, the API) runs shifted. Spark's launcher starts the JVM from
  ``JAVA_HOME``, so ``JAVA_HOME`` points at a folder whose ``bin/java`` starts the real one
  without libfaketime.

One consequence is handled apart: the stream stamps ingest times with the real clock, and the
quarantine table is partitioned by ingest date, so to a shifted ``archive_lake`` the
quarantine looks ``shift`` days old. Airflow therefore starts no run on its own in a shifted run
(``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False``): the first scheduled ``archive_lake`` run at
start would archive every quarantine partition. The tests trigger every run they check.

Load it with ``-p tests.clock_shift``; it refuses to run when the clock is not shifted, so a
run that was meant to prove date independence cannot silently prove nothing.

File times cannot be shifted for every reader: the kernel stamps files with the real time, and
libfaketime (0.9.10, Debian 12) shifts what ``stat`` reports but not ``statx``, which Rust's
standard library, and so delta-rs, uses. To a shifted process delta-rs sees every file as older
by the shift: its file-age retentions (the lake's vacuum, the Delta log's cleanup) are lengthened
by the shift for the run, so they judge the same files as on a plain run. A test that compares
a file's age as delta-rs sees it with an age it sets itself is skipped in a shifted run
(``NOT_SHIFTABLE``, with the reason), as are the two schemathesis runs (Python's timed lock
waits hang under libfaketime); they run in every plain ``make test``.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from include.embedded import broker
from include.embedded.paths import StatePaths
from include.settings import Settings

# What libfaketime reads; the broker is started without them.
_FAKETIME_ENV = ("LD_PRELOAD", "FAKETIME")
# A command prefix that starts its program on the real clock.
_REAL_CLOCK = ["env", *(arg for name in _FAKETIME_ENV for arg in ("-u", name))]
_DAY = 86_400.0
_SHIFT = pytest.StashKey[float]()


def real_time() -> float:
    """Seconds since the epoch on the real clock (a process started without libfaketime)."""
    out = subprocess.run([*_REAL_CLOCK, "date", "+%s"], capture_output=True, text=True, check=True)
    return float(out.stdout)


def shift_days() -> float:
    """How many days this process's clock runs ahead of the real one."""
    return (time.time() - real_time()) / _DAY


_unshifted_broker = broker.server_command


def _broker_on_the_real_clock(paths: StatePaths) -> list[str]:
    return [*_REAL_CLOCK, *_unshifted_broker(paths)]


def _java_on_the_real_clock(java_home: Path) -> None:
    home = os.environ.get("JAVA_HOME")
    real = shutil.which("java", path=str(Path(home) / "bin")) if home else shutil.which("java")
    if real is None:
        raise pytest.UsageError("no java found (JAVA_HOME or PATH)")
    wrapper = java_home / "bin" / "java"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.join([*_REAL_CLOCK, real])} "$@"\n')
    wrapper.chmod(0o755)
    # Spark's launcher starts the final JVM from JAVA_HOME (else from its own java.home).
    os.environ["JAVA_HOME"] = str(java_home)
    os.environ["PATH"] = f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"


def _lengthen_file_age_retentions(days: int) -> None:
    """Give the platform's processes (through the environment, like every setting) retentions
    lengthened by the shift: what delta-rs sees as a file's age is lengthened by as much."""
    fields = Settings.model_fields
    vacuum_hours = fields["lake_vacuum_retention_hours"].default + 24 * days
    log_days = fields["lake_log_retention_days"].default + days
    os.environ["LAKEHOUSE_LAKE_VACUUM_RETENTION_HOURS"] = str(vacuum_hours)
    os.environ["LAKEHOUSE_LAKE_LOG_RETENTION_DAYS"] = str(log_days)


def pytest_configure(config: pytest.Config) -> None:
    """Check the clock is shifted; start the broker and the JVM on the real clock."""
    days = shift_days()
    if "faketime" not in os.environ.get("LD_PRELOAD", "") or days < 1:
        raise pytest.UsageError(
            "tests.clock_shift needs a shifted clock: run it under faketime, e.g. "
            "`faketime -f +400d python -m pytest -p tests.clock_shift` (make test-clock-shift)"
        )
    config.stash[_SHIFT] = days
    _lengthen_file_age_retentions(math.ceil(days))
    os.environ["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    broker.server_command = _broker_on_the_real_clock
    _java_on_the_real_clock(Path(tempfile.mkdtemp(prefix="clock-shift-java-")))


# Tests a shifted clock cannot run meaningfully, and why; each runs in every plain make test.
NOT_SHIFTABLE = {
    # Its meaning rests on file times read by delta-rs agreeing with the process clock.
    "tests/unit/test_delta_files.py::"
    "test_maintenance_deletes_files_no_commit_added_once_past_the_retention": (
        "delta-rs reads file ages with statx, which libfaketime does not shift"
    ),
    # schemathesis waits on locks with timeouts: Python's sem_clockwait takes its deadline from
    # the shifted monotonic clock, the kernel waits on the real one (seen: both runs hung until
    # their subprocess timeout). Neither test involves a date: both are seeded API fuzzing.
    "tests/integration/test_api.py::"
    "test_schemathesis_finds_no_server_error_and_no_schema_violation": (
        "timed lock waits hang under libfaketime (deadline on the shifted monotonic clock)"
    ),
    "tests/integration/test_bad_input.py::test_schemathesis_as_a_tenant_finds_no_server_error": (
        "timed lock waits hang under libfaketime (deadline on the shifted monotonic clock)"
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip, with the reason, the tests a shifted clock cannot run meaningfully."""
    for item in items:
        reason = NOT_SHIFTABLE.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"shifted clock: {reason}"))


def _shift_line(config: pytest.Config) -> str:
    return f"clock shifted: {config.stash[_SHIFT]:.1f} days ahead of the real clock"


def pytest_report_header(config: pytest.Config) -> str:
    """Say how far ahead the clock runs, at the top of the run."""
    return _shift_line(config)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Say it again at the end, where a quiet run and a log's tail show it."""
    terminalreporter.write_line(_shift_line(config))
