"""A private PostgreSQL cluster in the state directory (or, as root, wherever its OS user can
reach it): initdb once, then a server command."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from include.embedded.paths import StatePaths
from include.settings import Settings

log = logging.getLogger(__name__)

# Appended to postgresql.conf by initdb time; the port and address come from the command line
# so that changed settings apply on the next start.
_CLUSTER_CONF = """\
# Written by the lakehouse at initdb time.
unix_socket_directories = ''
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
"""


def privilege_prefix(settings: Settings) -> list[str]:
    """Command prefix that runs PostgreSQL as ``pg_os_user`` when we are root (it refuses root)."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam(settings.pg_os_user)
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--",
    ]


def _hand_to_os_user(path: Path, settings: Settings) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(settings.pg_os_user)
        os.chown(path, user.pw_uid, user.pw_gid)


# Next to a cluster outside the state directory: which state directory it serves.
_MARKER = "state-dir"


def fallback_home(settings: Settings, paths: StatePaths) -> Path:
    """The folder under ``pg_fallback_dir`` for this state directory's cluster: one per state
    directory, named by a hash of its absolute path so two checkouts never share one."""
    digest = hashlib.sha256(str(paths.root).encode()).hexdigest()[:16]
    return settings.pg_fallback_dir / digest


def recorded_data_dir(paths: StatePaths) -> Path | None:
    """The cluster folder outside the state directory its ``postgres.location`` names, if any."""
    try:
        text = paths.pg_location.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return Path(text) if text else None


def data_dir(settings: Settings, paths: StatePaths) -> Path:
    """The cluster folder of this state directory.

    ``<state dir>/postgres``, unless we are root and ``pg_os_user`` cannot traverse the state
    directory (a checkout in a private home folder, as root's own is): PostgreSQL refuses to
    run as root, and changing the modes of someone's folders behind their back is not ours to
    do, so the cluster goes to ``<pg_fallback_dir>/<hash>/postgres`` instead, recorded in the
    state directory (which then finds it after a move of the checkout). A cluster that exists
    is used where it is: a state directory that worked keeps its data and its layout.
    """
    in_state = paths.pg_data
    if os.geteuid() != 0 or (in_state / "PG_VERSION").exists():
        return in_state
    recorded = recorded_data_dir(paths)
    if recorded is not None:
        return recorded
    if _os_user_can_traverse(paths.root, settings):
        return in_state
    return fallback_home(settings, paths) / "postgres"


def outside_homes(settings: Settings, paths: StatePaths) -> list[Path]:
    """Folders outside the state directory that hold its cluster: ``make reset`` deletes them."""
    homes = [fallback_home(settings, paths)]
    recorded = recorded_data_dir(paths)
    # Only a folder this module made (it has the marker), whatever the file says.
    if recorded is not None and (recorded.parent / _MARKER).is_file():
        homes.append(recorded.parent)
    return [home for home in dict.fromkeys(homes) if home.exists()]


def _os_user_can_traverse(path: Path, settings: Settings) -> bool:
    # test(1) run as that user answers for its uid, groups and any ACL, folder by folder.
    probe = [*privilege_prefix(settings), "test", "-x", str(path)]
    return subprocess.run(probe, check=False).returncode == 0


def _make_outside_home(settings: Settings, home: Path) -> None:
    base = home.parent
    if not base.exists():
        base.mkdir(parents=True)
        # Whatever the umask: the OS user must traverse it to reach its own folder inside.
        base.chmod(0o755)
    home.mkdir(mode=0o700, exist_ok=True)
    _hand_to_os_user(home, settings)


def _check_outside_cluster(settings: Settings, paths: StatePaths, data: Path) -> None:
    if recorded_data_dir(paths) is None:
        raise RuntimeError(
            f"{data} holds a PostgreSQL cluster of an earlier state directory at {paths.root}, "
            "deleted without `make reset`, so it does not match this one's data: delete it "
            f"(rm -rf {data.parent}) to start afresh, or keep it (echo {data} > "
            f"{paths.pg_location})"
        )
    # Which state directory the folder serves (kept true after a move of the checkout), for
    # an operator looking at the hashes; `make reset` deletes only a folder that has it.
    (data.parent / _MARKER).write_text(f"{paths.root}\n", encoding="utf-8")


def ensure_cluster(settings: Settings, paths: StatePaths, bindir: Path) -> bool:
    """Run initdb unless the cluster exists; return whether it was created now."""
    data = data_dir(settings, paths)
    outside = data != paths.pg_data
    prefix = privilege_prefix(settings)
    user = settings.pg_os_user
    if (data / "PG_VERSION").exists():
        if outside:
            _check_outside_cluster(settings, paths, data)
        if prefix and not _os_user_can_traverse(data, settings):
            hint = ""
            if not outside:
                target = fallback_home(settings, paths) / "postgres"
                hint = (
                    f", or move it out: mkdir -p {target.parent} && mv {data} {target} && "
                    f"echo {target} > {paths.pg_location}"
                )
            raise PermissionError(
                f"PostgreSQL runs as OS user {user}, who cannot reach the existing cluster "
                f"{data}; let {user} traverse the folders above it{hint}"
            )
        return False
    if outside:
        _make_outside_home(settings, data.parent)
        paths.pg_location.write_text(f"{data}\n", encoding="utf-8")
        _check_outside_cluster(settings, paths, data)
        # An empty folder left by an earlier start that stopped at this very permission.
        with contextlib.suppress(OSError):
            paths.pg_data.rmdir()
        log.info(
            "postgres cluster outside the state directory",
            extra={
                "pgdata": str(data),
                "state_dir": str(paths.root),
                "reason": f"OS user {user} cannot traverse the state directory",
            },
        )
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    _hand_to_os_user(data, settings)
    if prefix and subprocess.run([*prefix, "test", "-w", str(data)], check=False).returncode:
        raise PermissionError(
            f"PostgreSQL runs as OS user {user}, who cannot write {data}; let {user} "
            "traverse the folders above it, or set LAKEHOUSE_PG_FALLBACK_DIR to a folder it can"
        )
    # Next to the cluster: its OS user can reach that folder, maybe not the state directory.
    with tempfile.NamedTemporaryFile("w", dir=data.parent, delete=False) as pwfile:
        pwfile.write(settings.pg_password.get_secret_value() + "\n")
    pwpath = Path(pwfile.name)
    try:
        _hand_to_os_user(pwpath, settings)
        result = subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={settings.pg_user}",
                f"--pwfile={pwpath}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        pwpath.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
    conf = data / "postgresql.conf"
    with conf.open("a", encoding="utf-8") as handle:
        handle.write("\n" + _CLUSTER_CONF)
    log.info("postgres cluster initialised", extra={"pgdata": str(data)})
    return True


def server_command(settings: Settings, paths: StatePaths, bindir: Path) -> list[str]:
    """The foreground ``postgres`` command line the supervisor runs."""
    return [
        *privilege_prefix(settings),
        str(bindir / "postgres"),
        "-D",
        str(data_dir(settings, paths)),
        "-p",
        str(settings.pg_port),
        "-c",
        f"listen_addresses={settings.pg_host}",
    ]


def ensure_database(settings: Settings, name: str | None = None) -> bool:
    """Create database ``name`` (the platform database by default) if missing; return whether
    it was created now."""
    database = name or settings.pg_database
    admin_dsn = settings.pg_dsn.replace(f"dbname={settings.pg_database}", "dbname=postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    log.info("database created", extra={"database": database})
    return True
