"""A small client of the Airflow 3 REST API, for tests and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from include.embedded import airflow
from include.embedded.paths import StatePaths
from include.settings import Settings


@dataclass
class AirflowApi:
    """Token-authenticated calls to the embedded Airflow's API server."""

    base_url: str
    token: str

    @classmethod
    def login(cls, settings: Settings, timeout_s: float = 120) -> AirflowApi:
        """Wait for the API server, then log in as the UI user."""
        base = f"http://127.0.0.1:{settings.airflow_port}"
        password = airflow.ui_password(StatePaths.under(settings.state_dir))
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = httpx.post(
                    f"{base}/auth/token",
                    json={"username": airflow.UI_USER, "password": password},
                    timeout=10,
                )
                response.raise_for_status()
                return cls(base, response.json()["access_token"])
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def get(self, path: str) -> Any:
        """GET ``/api/v2{path}``."""
        response = httpx.get(
            f"{self.base_url}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``/api/v2{path}``."""
        response = httpx.post(
            f"{self.base_url}/api/v2{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        response.raise_for_status()
        return response.json()

    def wait_for_dags(self, dag_ids: set[str], timeout_s: float = 180) -> dict[str, Any]:
        """The DAGs, once every one of ``dag_ids`` is parsed; raises ``TimeoutError`` if some
        are not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            dags = {d["dag_id"]: d for d in self.get("/dags?limit=100")["dags"]}
            if dag_ids <= set(dags):
                return dags
            if time.monotonic() > deadline:
                missing = sorted(dag_ids - set(dags))
                raise TimeoutError(f"DAGs {missing} not parsed after {timeout_s:.0f} s")
            time.sleep(3)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run of ``dag_id`` now (with params ``conf``); return its run id."""
        run = self.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 300) -> str:
        """The final state of a run (``success`` or ``failed``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = str(self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} run {run_id} did not finish in {timeout_s:.0f} s")
