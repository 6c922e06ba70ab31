"""A private PostgreSQL cluster in the state directory: initdb once, then a server command."""

from __future__ import annotations

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


def ensure_cluster(settings: Settings, paths: StatePaths, bindir: Path) -> bool:
    """Run initdb unless the cluster exists; return whether it was created now."""
    data = paths.pg_data
    if (data / "PG_VERSION").exists():
        return False
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    _hand_to_os_user(data, settings)
    prefix = privilege_prefix(settings)
    if prefix and subprocess.run([*prefix, "test", "-w", str(data)], check=False).returncode:
        raise PermissionError(
            f"PostgreSQL runs as OS user {settings.pg_os_user}, who cannot reach {data}; "
            "set LAKEHOUSE_STATE_DIR to a folder that user can traverse (e.g. under /var/tmp)"
        )
    with tempfile.NamedTemporaryFile("w", dir=paths.run, delete=False) as pwfile:
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
        str(paths.pg_data),
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
