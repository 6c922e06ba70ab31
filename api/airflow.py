"""Triggering Airflow DAG runs through Airflow's REST API (the API never imports a DAG)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from include.settings import Settings

log = logging.getLogger("lakehouse.api.airflow")
AIRFLOW_USER = "admin"


class AirflowUnavailableError(RuntimeError):
    """Airflow could not be reached or refused the request."""


class AirflowClient:
    """Logs in as the platform's Airflow user and triggers runs with ``conf``."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s

    def _password(self) -> str:
        if self._settings.airflow_api_password is not None:
            return self._settings.airflow_api_password.get_secret_value()
        # The embedded platform generates the password into its state directory.
        from include.embedded import airflow
        from include.embedded.paths import StatePaths

        return airflow.ui_password(StatePaths.under(self._settings.state_dir))

    async def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Start a run of ``dag_id`` now; return its run id."""
        base = self._settings.airflow_url
        try:
            async with httpx.AsyncClient(base_url=base, timeout=self._timeout_s) as client:
                login = await client.post(
                    "/auth/token", json={"username": AIRFLOW_USER, "password": self._password()}
                )
                login.raise_for_status()
                headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
                run = await client.post(
                    f"/api/v2/dags/{dag_id}/dagRuns",
                    json={"logical_date": None, "conf": conf},
                    headers=headers,
                )
                run.raise_for_status()
                return str(run.json()["dag_run_id"])
        except (httpx.HTTPError, KeyError, OSError) as exc:
            raise AirflowUnavailableError(f"could not trigger {dag_id}: {exc!r}") from exc
