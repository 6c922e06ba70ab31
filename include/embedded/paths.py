"""Where each embedded service keeps its files under the state directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Unix socket paths are limited to 107 bytes on Linux, and supervisord binds "<socket>.<pid>"
# first (a pid has up to 7 digits), then links it into place.
_MAX_SOCKET_PATH = 107 - len(".4194304")


@dataclass(frozen=True)
class StatePaths:
    """The layout of one state directory (``.lakehouse/`` by default)."""

    root: Path

    @classmethod
    def under(cls, state_dir: Path) -> StatePaths:
        """Layout of ``state_dir``, made absolute so services started elsewhere agree."""
        return cls(state_dir.expanduser().resolve())

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres"

    @property
    def pg_location(self) -> Path:
        """Names the cluster folder when it lives outside (started as root, see postgres.py)."""
        return self.root / "postgres.location"

    @property
    def pulsar_dir(self) -> Path:
        return self.root / "pulsar"

    @property
    def pulsar_config(self) -> Path:
        return self.pulsar_dir / "pulsar-lite.toml"

    @property
    def pulsar_data(self) -> Path:
        return self.pulsar_dir / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def supervisor_config(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.run / "supervisord.pid"

    def create(self) -> None:
        """Create the folders (idempotent); refuse a state dir too deep for a Unix socket."""
        if len(str(self.supervisor_socket)) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"state directory {self.root} is too deep for a Unix socket path; "
                "set LAKEHOUSE_STATE_DIR to a shorter path"
            )
        for folder in (self.root, self.pulsar_dir, self.pulsar_data, self.logs, self.run):
            folder.mkdir(parents=True, exist_ok=True)
