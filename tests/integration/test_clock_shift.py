"""The suite's result does not depend on the date: the cheap part of that proof, in every run.

``make test-clock-shift`` runs the whole suite with the clock moved ahead; here the unit tests
and the lake archive's tests (no services, about 20 s) run 400 days ahead under Debian's
``faketime``, so a test bound to the calendar fails ``make test`` the day it is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIFTED = ["tests/unit", "tests/integration/test_lake_archive.py"]


def _pytest(*args: str, faketime: str | None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-p", "tests.clock_shift", "-p", "no:cacheprovider"]
    prefix = [] if faketime is None else [_faketime(), "-f", faketime]
    # The real clock for the run below, even when this test itself runs shifted.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "FAKETIME")}
    return subprocess.run(
        [*prefix, *command, "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _faketime() -> str:
    found = shutil.which("faketime")
    assert found, "Debian's faketime is missing: `make test` installs it (apt-get install faketime)"
    return found


def test_unit_tests_pass_400_days_ahead() -> None:
    run = _pytest(*SHIFTED, faketime="+400d")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "clock shifted: 400.0 days ahead" in run.stdout, run.stdout[:2000]
    assert " passed" in run.stdout and " failed" not in run.stdout


def test_the_shifted_run_refuses_a_clock_that_is_not_shifted() -> None:
    run = _pytest("tests/unit/test_settings.py", faketime=None)
    assert run.returncode != 0
    assert "needs a shifted clock" in run.stderr + run.stdout
