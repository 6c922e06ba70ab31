"""The whole platform, end to end, as `make run` starts it (`make test-e2e`).

One run for the module: every component under supervisord on free ports; tenants and their
tokens created through the API as admin; a seeded mix published for three tenants with the
project's generator; the stream consumes it; `load_postgres` is triggered through Airflow's
REST API until its watermarks cover the lake. Then the API, asked with tenant tokens only, and
the Delta tables, read with DuckDB instead of delta-rs, must hold exactly what the test
computes from the messages it published.
"""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.messages import DUPLICATE, MALFORMED, TENANT_MISMATCH, UNSUPPORTED_VERSION, VALID
from include.embedded import supervisor
from tests.e2e.harness import (
    PROGRAMS,
    START,
    TENANTS,
    Expected,
    Platform,
    Published,
    assert_events,
    assert_isolation,
    assert_lake,
    assert_metrics,
    assert_usage,
    build_mix,
    expected,
    run_mix,
)
from tests.integration.api_reference import event_time

SEED = 606
COUNT = 3_000
LOGS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e-logs"
# The module's single run is set up inside its first test: time it as a whole, generously
# (about 4 minutes on an idle 2-core machine; much longer when other jobs share the cores).
pytestmark = pytest.mark.timeout(1_800)


@dataclass
class Run:
    """The platform after the run, the tenants' tokens, what was published and expected."""

    platform: Platform
    tokens: dict[str, str]
    published: Published
    expected: Expected
    pids: dict[str, int]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with Platform.start() as platform:
        try:
            pids = {name: platform.pid(name) for name in PROGRAMS}
            mix = run_mix(platform, SEED, COUNT)
            yield Run(platform, mix.tokens, mix.published, mix.expected, pids)
        finally:
            # The state directory goes with the platform: keep the services' logs to read.
            shutil.rmtree(LOGS, ignore_errors=True)
            shutil.copytree(platform.paths.logs, LOGS, dirs_exist_ok=True)


def test_the_mix_holds_every_kind_of_message() -> None:
    messages = build_mix(TENANTS, SEED, COUNT)
    assert messages == build_mix(TENANTS, SEED, COUNT), "the mix is reproducible from its seed"
    kinds = Counter(m.kind for m in messages)
    for kind in (VALID, DUPLICATE, MALFORMED, UNSUPPORTED_VERSION, TENANT_MISMATCH):
        assert kinds[kind] > 0, kind
    reasons = {m.reason for m in messages}
    assert {"currency_mismatch", "schema_violation", "payload_too_large"} <= reasons
    exp = expected(Published(SEED, TENANTS, tuple(messages)))
    events = [e for t in TENANTS for e in exp.events[t]]
    assert {e["schema_version"] for e in events} == {1, 2}
    assert any(event_time(e) < START for e in events), "late events"
    assert all(len(exp.events[t]) > 500 for t in TENANTS)
    assert sum(exp.bronze_rows.values()) > len(events), "duplicates"


def test_metrics_totals_and_series_equal_what_was_published(run: Run) -> None:
    for tenant in TENANTS:
        assert_metrics(run.platform, run.tokens[tenant], run.expected, tenant)


def test_event_pages_serve_each_event_of_the_tenant_once(run: Run) -> None:
    for tenant in TENANTS:
        assert_events(run.platform, run.tokens[tenant], run.expected, tenant)


def test_usage_counts_ingested_and_quarantined_messages_exactly(run: Run) -> None:
    for tenant in TENANTS:
        assert_usage(run.platform, run.tokens[tenant], run.expected, tenant)


def test_no_tenant_sees_another_tenants_data(run: Run) -> None:
    assert_isolation(run.platform, run.tokens, run.expected)


def test_the_lake_read_by_another_engine_agrees(run: Run) -> None:
    assert_lake(run.platform.settings, run.expected)


def test_every_component_still_runs_and_restarts_are_reported(run: Run) -> None:
    """Every program runs at the end. A restart by supervisord is not a failure here (the
    chaos suite shows restarts change no number, and a starved machine can time out Spark's
    Python workers), but it is reported as a warning with supervisord's exit lines."""
    states = {p.name: p.state for p in supervisor.process_info(run.platform.paths)}
    assert {name: states.get(name) for name in PROGRAMS} == dict.fromkeys(PROGRAMS, "RUNNING")
    now = {name: run.platform.pid(name) for name in PROGRAMS}
    restarted = sorted(name for name in PROGRAMS if now[name] != run.pids[name])
    if restarted:
        log_file = run.platform.paths.logs / "supervisord.log"
        exits = [line for line in log_file.read_text().splitlines() if "exited:" in line]
        warnings.warn(f"restarted during the run: {restarted}: {exits}", stacklevel=1)
