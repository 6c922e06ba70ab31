"""Checks for what the embedded platform needs from the machine, each failing with one sentence."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 11)
MIN_JAVA = 17
MIN_POSTGRES = 15


class MissingPrerequisiteError(RuntimeError):
    """Something the platform needs is not installed; the message says what to install."""


def check_python() -> None:
    """Refuse a Python older than 3.11."""
    if sys.version_info < MIN_PYTHON:
        raise MissingPrerequisiteError(
            f"Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer is required "
            f"(found {sys.version.split()[0]}): install python3.11."
        )


def parse_java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0`` counts as 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> None:
    """Refuse a missing or older Java than 17 (Spark needs it)."""
    java = shutil.which("java")
    if java is None:
        raise MissingPrerequisiteError(
            "Java 17 or newer is required by Spark and was not found on PATH: "
            "install openjdk-17-jre-headless (apt-get install -y openjdk-17-jre-headless)."
        )
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = parse_java_major(output.stderr + output.stdout)
    if major is None or major < MIN_JAVA:
        raise MissingPrerequisiteError(
            f"Java {MIN_JAVA} or newer is required by Spark (found {major or 'unknown'}): "
            "install openjdk-17-jre-headless."
        )


def _postgres_major(bindir: Path) -> int | None:
    output = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    )
    match = re.search(r"\(PostgreSQL\) (\d+)", output.stdout)
    return int(match.group(1)) if match else None


def find_postgres_bindir(configured: Path | None) -> Path:
    """The folder of ``initdb`` and ``postgres`` (15 or newer): configured, ``pg_config``, or
    the newest ``/usr/lib/postgresql/*/bin``."""
    candidates: list[Path] = []
    if configured is not None:
        candidates.append(configured)
    else:
        pg_config = shutil.which("pg_config")
        if pg_config:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            if out.returncode == 0:
                candidates.append(Path(out.stdout.strip()))
        candidates.extend(
            sorted(
                Path("/usr/lib/postgresql").glob("*/bin"),
                key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                reverse=True,
            )
        )
        on_path = shutil.which("postgres")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            major = _postgres_major(bindir)
            if major is not None and major >= MIN_POSTGRES:
                return bindir
    raise MissingPrerequisiteError(
        f"PostgreSQL {MIN_POSTGRES}+ server binaries (initdb, postgres) were not found: "
        "install postgresql-15 (apt-get install -y postgresql-15) or set LAKEHOUSE_PG_BINDIR."
    )


def check_privilege_drop() -> None:
    """As root, PostgreSQL must be started as another user, which needs ``setpriv``."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        raise MissingPrerequisiteError(
            "Running as root needs setpriv to start PostgreSQL as an unprivileged user: "
            "install util-linux."
        )
