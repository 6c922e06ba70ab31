"""Airflow 3 in the embedded platform: its environment, metadata database and processes.

Airflow runs as four supervised processes (api-server, scheduler, dag-processor, triggerer),
not ``airflow standalone`` (which ignores SIGTERM for its children), with the LocalExecutor and
its metadata in its own database of the platform's PostgreSQL. Connections come from
``AIRFLOW_CONN_*`` variables. Secrets (the JWT and session keys every component must share, the
UI password) are generated once into the state directory, never written in code.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from include.embedded.paths import StatePaths
from include.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_DATABASE = "airflow"
UI_USER = "admin"
# name -> airflow sub-command; each is one supervised program.
PROGRAMS = {
    "airflow-api-server": ["api-server"],
    "airflow-scheduler": ["scheduler"],
    "airflow-dag-processor": ["dag-processor"],
    "airflow-triggerer": ["triggerer"],
}


def airflow_home(paths: StatePaths) -> Path:
    """``AIRFLOW_HOME`` of this state directory."""
    return paths.root / "airflow"


def airflow_bin() -> Path:
    """The ``airflow`` executable of this interpreter's environment."""
    return Path(sys.executable).parent / "airflow"


def _secrets_file(paths: StatePaths) -> Path:
    return airflow_home(paths) / "lakehouse-secrets.json"


def passwords_file(paths: StatePaths) -> Path:
    """The simple auth manager's password file (user -> password)."""
    return airflow_home(paths) / "simple_auth_manager_passwords.json"


def ensure_secrets(paths: StatePaths) -> dict[str, str]:
    """The generated keys and UI password, created on first use and kept (mode 0600)."""
    home = airflow_home(paths)
    home.mkdir(parents=True, exist_ok=True)
    path = _secrets_file(paths)
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    values = {
        "jwt_secret": secrets.token_urlsafe(64),
        "secret_key": secrets.token_urlsafe(64),
        "ui_password": secrets.token_urlsafe(12),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    passwords = passwords_file(paths)
    passwords.touch(mode=0o600)
    passwords.write_text(json.dumps({UI_USER: values["ui_password"]}))
    return values


def ui_password(paths: StatePaths) -> str:
    """The password of the UI user."""
    return ensure_secrets(paths)["ui_password"]


def _postgres_url(settings: Settings, scheme: str, database: str) -> str:
    password = quote(settings.pg_password.get_secret_value(), safe="")
    return (
        f"{scheme}://{quote(settings.pg_user, safe='')}:{password}@{settings.pg_host}:"
        f"{settings.pg_port}/{database}"
    )


def airflow_env(settings: Settings, paths: StatePaths) -> dict[str, str]:
    """The environment of every Airflow process (and of ``airflow`` commands)."""
    keys = ensure_secrets(paths)
    home = airflow_home(paths)
    api = settings.airflow_url
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(settings.env == "prod"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(paths)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _postgres_url(
            settings, "postgresql+psycopg2", AIRFLOW_DATABASE
        ),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(paths.logs / "airflow"),
        # A task outlives an api-server restart: supervisord brings it back, and the task's
        # calls wait for it instead of failing the task (docs/operations.md).
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": str(settings.airflow_execution_api_retries),
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": str(settings.airflow_execution_api_timeout_s),
        # New DAG files show up within half a minute instead of five.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # Re-parsing the six unchanged DAG files every 30 s (the default) cost the idle platform
        # 0.05 cores, a tenth of its budget (docs/performance.md, issue #15).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        # The Spark provider's Spark Connect connection: where loads and replays run.
        # (A URI, not JSON: supervisord's environment values cannot hold double quotes.)
        "AIRFLOW_CONN_SPARK_CONNECT_DEFAULT": f"spark-connect://{settings.spark_connect_addr}",
        "AIRFLOW_CONN_LAKEHOUSE_POSTGRES": _postgres_url(
            settings, "postgresql", settings.pg_database
        ),
        # spark-submit is found on PATH only; DAGs and the jobs they run import the project.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
        "PYSPARK_PYTHON": sys.executable,
    }
    return env


def program_commands() -> dict[str, list[str]]:
    """The command line of each supervised Airflow process."""
    return {name: [str(airflow_bin()), *args] for name, args in PROGRAMS.items()}


def migrate(settings: Settings, paths: StatePaths) -> None:
    """Create or upgrade Airflow's metadata schema (idempotent, a few seconds)."""
    env = {**os.environ, **airflow_env(settings, paths)}
    result = subprocess.run(
        [str(airflow_bin()), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        output = result.stdout[-2000:] + result.stderr[-3000:]
        raise RuntimeError(f"airflow db migrate failed:\n{output}")
