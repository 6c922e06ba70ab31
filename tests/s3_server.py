"""An S3-compatible server for tests: moto in server mode, as a real HTTP server in a subprocess.

moto stores objects in memory and honours ``If-None-Match: *`` and ``If-Match`` on
``PutObject`` (412 Precondition Failed otherwise), which is what delta-rs's safe concurrent
commits rely on. Its request recorder lets a test see the headers delta-rs sent, and its log the
status each request got.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.services import free_port

ACCESS_KEY_ID = "lakehouse-test"


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint, the credentials it accepts and its log file."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    log: Path

    def _post(self, action: str) -> bytes:
        request = urllib.request.Request(
            f"{self.endpoint_url}/moto-api/recorder/{action}", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())

    @contextmanager
    def recording(self) -> Iterator[list[dict[str, Any]]]:
        """Record every request made inside the block; the list holds them after it."""
        self._post("reset-recording")
        self._post("start-recording")
        requests: list[dict[str, Any]] = []
        try:
            yield requests
        finally:
            self._post("stop-recording")
            url = f"{self.endpoint_url}/moto-api/recorder/download-recording"
            with urllib.request.urlopen(url, timeout=10) as response:
                lines = response.read().decode().splitlines()
            requests.extend(json.loads(line) for line in lines if line.strip())

    def log_lines(self) -> list[str]:
        """What the server logged so far (one line per request, with its status)."""
        return self.log.read_text(errors="replace").splitlines()


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise RuntimeError(f"moto server not up at {endpoint} after {timeout_s} s")


@contextmanager
def s3_server(workdir: Path, timeout_s: float = 60) -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stop it on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = workdir / "moto.log"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(workdir / "moto-recording.jsonl")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        _wait_until_up(endpoint, process, timeout_s)
        yield S3Server(endpoint, ACCESS_KEY_ID, secrets.token_hex(16), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
