"""DAG integrity, in the style of Airflow's own example-DAG tests: every DAG file imports
cleanly, parsing touches no database and fetches no connection, every DAG is documented and
owned, has tags and retries."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {
    "archive_lake",
    "erase_customer",
    "load_postgres",
    "maintain_postgres",
    "replay",
    "stream_watchdog",
}


class ParseTimeIOError(AssertionError):
    """A DAG file did I/O while being parsed."""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    monkeypatch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("airflow-home")
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    # A database nobody can reach: a query while parsing fails instead of passing unnoticed.
    monkeypatch.setenv(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    )
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise ParseTimeIOError("I/O while parsing a DAG file")

    import psycopg
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.connection import Connection
    from airflow.sdk import BaseHook

    monkeypatch.setattr(psycopg, "connect", forbidden)
    monkeypatch.setattr(BaseHook, "get_connection", forbidden)
    monkeypatch.setattr(Connection, "get_connection_from_secrets", forbidden)
    try:
        yield DagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")
    finally:
        monkeypatch.undo()


def test_every_dag_file_imports_without_errors_or_io(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) >= EXPECTED


def test_every_dag_is_documented_owned_tagged_and_retried(dagbag: Any) -> None:
    for dag_id in dagbag.dag_ids:
        dag = dagbag.dags[dag_id]
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and dag_id in dag.doc_md, f"{dag_id} has no doc shown in the UI"
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_parsing_the_dags_imports_neither_spark_nor_the_jobs(tmp_path: Path) -> None:
    # In a fresh interpreter: this test process may have imported both for other tests.
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r}, bundle_path={str(DAGS)!r}, "
        "bundle_name='dags-folder')\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'jobs'}))\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://nobody@127.0.0.1:1/none",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(DAGS.parent),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
