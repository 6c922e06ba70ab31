"""SIGKILL the supervised streaming job repeatedly; the end state stays exact.

The job runs as `make run` runs it (spark-submit under supervisord, topics from the tenant
registry); a tenant registered mid-run gets its events processed too.
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import timedelta

from include.db import connect
from include.embedded import supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from tests.integration.stream_fixtures import (
    MIX_START,
    Reference,
    assert_end_state,
    publish_mix,
    register,
    wait_until_consumed,
)
from tests.services import embedded_platform

KILLS = 3


def _batches(settings: Settings) -> int:
    with connect(settings) as conn:
        row = conn.execute("SELECT count(*) FROM stream_batches").fetchone()
    return int(row[0]) if row else 0


def _kill_stream(paths: StatePaths) -> int:
    pid = {p.name: p.pid for p in supervisor.process_info(paths)}["stream"]
    assert pid > 0, "the stream is not running"
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the JVM, the Python driver and its workers
    return pid


def _wait_for_progress(settings: Settings, after: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while _batches(settings) <= after:
        if time.monotonic() > deadline:
            log = (StatePaths.under(settings.state_dir).logs / "stream.log").read_text()
            raise AssertionError(f"the restarted stream made no progress:\n{log[-6000:]}")
        time.sleep(0.5)


def test_sigkill_at_random_moments_changes_nothing() -> None:
    rng = random.Random(int(os.environ.get("LAKEHOUSE_CHAOS_SEED", "1234")))
    with embedded_platform(
        apps=("stream",), stream_max_records_per_batch=2_000, stream_trigger_seconds=1.0
    ) as settings:
        paths = StatePaths.under(settings.state_dir)
        tenants = ["recov_alpha", "recov_beta"]
        reference = Reference()
        publish_mix(settings, register(settings, tenants), 16_000, seed=5, reference=reference)
        killed = []
        for kill in range(KILLS):
            _wait_for_progress(settings, _batches(settings))
            time.sleep(rng.uniform(0.0, 1.5))
            killed.append(_kill_stream(paths))
            if kill == 0:
                # A tenant registered while the job runs (or restarts) is picked up.
                late = register(settings, ["recov_late"])
                publish_mix(
                    settings,
                    late,
                    1_500,
                    seed=6,
                    reference=reference,
                    start=MIX_START + timedelta(hours=20),
                )
                tenants.append("recov_late")
        try:
            wait_until_consumed(settings, reference.published, timeout_s=420)
        except AssertionError as error:
            log = (paths.logs / "stream.log").read_text()
            raise AssertionError(f"{error}; the stream's log ends with:\n{log[-8000:]}") from error
        restarted = {p.name: p.pid for p in supervisor.process_info(paths)}["stream"]
        assert restarted not in killed
        assert_end_state(settings, reference, tenants)
        with connect(settings) as conn:
            apps = conn.execute("SELECT count(DISTINCT app_id) FROM stream_batches").fetchone()
        assert apps == (1,), "the checkpoint survived every kill"
