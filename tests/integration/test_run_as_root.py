"""`make run` as root from a checkout in a private folder (as root's home folder is).

PostgreSQL refuses to run as root, so the platform starts it as ``LAKEHOUSE_PG_OS_USER``, who
cannot traverse a 0700 folder of root's. The test clones this repository's HEAD into such a
folder and runs the clone's own ``python -m include.embedded`` there, as ``make run`` does,
with every app left out (``--without``): PostgreSQL and the broker start, the migrations run,
and that is the part that failed. Airflow and Spark add nothing to the question and minutes
to the test. The clone has no ``.venv`` of its own; this interpreter runs the clone's code
(``-m`` from the clone puts the clone's ``include`` first on ``sys.path``).

The smaller tests hold the choice of folder: a reachable state directory keeps its cluster, a
cluster that exists is used where it is, an unreachable existing one is refused, not moved.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from include.db import connect
from include.embedded import postgres, prereqs, supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from tests.services import isolated_settings, make_state_dir, settings_env

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_APPS = [arg for app in supervisor.APPS for arg in ("--without", app)]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="only root hands PostgreSQL to another OS user; anyone else runs it as themselves, "
    "who can reach their own private folders (CI runs as root, so it runs this test)",
)


def _clone_into_private_folder(parent: Path) -> Path:
    private = parent / "private"
    private.mkdir()
    private.chmod(0o700)
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    clone = private / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    return clone


def _embedded(clone: Path, env: dict[str, str], *args: str) -> str:
    """Run the clone's ``python -m include.embedded ARGS``; return its output, or fail."""
    result = subprocess.run(
        [sys.executable, "-m", "include.embedded", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{output[-4000:]}"
    return output


def _json_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("{")]


def _data_directory(settings: Settings) -> Path:
    with connect(settings) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return Path(row[0])


def test_make_run_as_root_from_a_private_folder() -> None:
    # Not pytest's tmp_path: its depth leaves no room for supervisord's socket path.
    parent = Path(tempfile.mkdtemp(prefix="lakehouse-root-", dir="/tmp"))
    clone = _clone_into_private_folder(parent)
    state = clone / ".lakehouse"
    settings = isolated_settings(state)
    env = settings_env(settings)
    # The default state directory, `.lakehouse` in the checkout, as a plain `make run` has it.
    del env["LAKEHOUSE_STATE_DIR"]
    env.pop("PYTHONPATH", None)
    try:
        started = _embedded(clone, env, "up", *NO_APPS)
        # The code that ran is the clone's: supervisord runs in the clone.
        assert f"directory={clone}\n" in (state / "supervisord.conf").read_text()

        data = _data_directory(settings)
        assert not data.is_relative_to(parent), data
        assert f"PG data      {data}" in started
        logged = {e["message"]: e for e in map(json.loads, _json_lines(started))}
        assert logged["postgres cluster outside the state directory"]["pgdata"] == str(data)
        assert logged["supervisor up"]["pgdata"] == str(data)
        assert f"PostgreSQL data {data}" in _embedded(clone, env, "status")
        info = data.stat()
        assert pwd.getpwuid(info.st_uid).pw_name == settings.pg_os_user
        assert stat.S_IMODE(info.st_mode) == 0o700
        # Nobody's folder was opened up to make it work.
        assert stat.S_IMODE((parent / "private").stat().st_mode) == 0o700
        assert not (state / "postgres").exists()

        with connect(settings) as conn:
            conn.execute("CREATE TABLE keep_me (id int)")
            conn.execute("INSERT INTO keep_me VALUES (42)")
            conn.commit()
        assert "Stopped." in _embedded(clone, env, "down")
        assert not (data / "postmaster.pid").exists()

        # The checkout moves: the next start finds the same cluster, which the first one
        # recorded in the state directory (a new path would hash to a new, empty folder).
        moved = clone.parent / "moved"
        clone.rename(moved)
        clone, state = moved, moved / ".lakehouse"
        _embedded(clone, env, "up", *NO_APPS)
        assert _data_directory(settings) == data
        with connect(settings) as conn:
            assert conn.execute("SELECT id FROM keep_me").fetchall() == [(42,)]
        assert (data.parent / "state-dir").read_text() == f"{state}\n"

        # `make reset` deletes the cluster's folder too, not only the state directory.
        reset = _embedded(clone, env, "reset")
        assert f"Deleted {data.parent}" in reset
        assert not data.parent.exists()
        assert not state.exists()
    finally:
        subprocess.run(
            [sys.executable, "-m", "include.embedded", "reset"],
            cwd=clone,
            env=env,
            capture_output=True,
            check=False,
            timeout=300,
        )
        for path in (clone, parent / "private" / "clone"):
            shutil.rmtree(
                postgres.fallback_home(settings, StatePaths.under(path / ".lakehouse")),
                ignore_errors=True,
            )
        shutil.rmtree(parent, ignore_errors=True)


def _private_state_dir(tmp_path: Path) -> StatePaths:
    private = tmp_path / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    paths = StatePaths.under(private / "state")
    paths.create()
    return paths


def test_the_cluster_stays_in_a_state_dir_its_os_user_can_reach(tmp_path: Path) -> None:
    state = make_state_dir()
    try:
        paths = StatePaths.under(state)
        settings = Settings(state_dir=state, pg_fallback_dir=tmp_path / "fallback")
        assert postgres.data_dir(settings, paths) == paths.pg_data
        # A cluster an earlier start made outside (recorded) is used there: it holds the data.
        elsewhere = tmp_path / "elsewhere" / "postgres"
        paths.pg_location.write_text(f"{elsewhere}\n")
        assert postgres.data_dir(settings, paths) == elsewhere
    finally:
        shutil.rmtree(state)


def test_a_private_state_dir_gets_its_own_cluster_folder_outside(tmp_path: Path) -> None:
    paths = _private_state_dir(tmp_path)
    settings = Settings(state_dir=paths.root, pg_fallback_dir=tmp_path / "fallback")
    data = postgres.data_dir(settings, paths)
    assert data == postgres.fallback_home(settings, paths) / "postgres"
    assert data.parent.parent == tmp_path / "fallback"
    other = StatePaths.under(tmp_path / "private" / "other")
    assert postgres.fallback_home(settings, other) != data.parent


def test_an_existing_cluster_its_os_user_cannot_reach_is_not_moved(tmp_path: Path) -> None:
    paths = _private_state_dir(tmp_path)
    settings = Settings(state_dir=paths.root, pg_fallback_dir=tmp_path / "fallback")
    paths.pg_data.mkdir()
    (paths.pg_data / "PG_VERSION").write_text("15\n")
    assert postgres.data_dir(settings, paths) == paths.pg_data
    bindir = prereqs.find_postgres_bindir(settings.pg_bindir)
    with pytest.raises(PermissionError, match=r"cannot reach the existing cluster .* mv "):
        postgres.ensure_cluster(settings, paths, bindir)
    assert (paths.pg_data / "PG_VERSION").exists()


def test_a_cluster_left_by_a_deleted_state_dir_is_not_taken_over(tmp_path: Path) -> None:
    paths = _private_state_dir(tmp_path)
    settings = Settings(state_dir=paths.root, pg_fallback_dir=tmp_path / "fallback")
    # `rm -rf .lakehouse` instead of `make reset` leaves the old cluster outside, unrecorded.
    left = postgres.fallback_home(settings, paths) / "postgres"
    left.mkdir(parents=True)
    (left / "PG_VERSION").write_text("15\n")
    assert postgres.data_dir(settings, paths) == left
    bindir = prereqs.find_postgres_bindir(settings.pg_bindir)
    with pytest.raises(RuntimeError, match="deleted without `make reset`"):
        postgres.ensure_cluster(settings, paths, bindir)
    # `make reset` deletes it with the state directory.
    assert postgres.outside_homes(settings, paths) == [left.parent]
