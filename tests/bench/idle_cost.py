"""The platform's idle cost: CPU cores used by all of its programs together at the demo rate.

Starts the whole platform as ``make run`` does (every program, the generator at the default
50 events/s, ``load_postgres`` every minute), waits until the stream committed a batch and a
load ran, then samples every process under supervisord for ``IDLE_SECONDS`` (default 300).

Short-lived processes count too (an Airflow task, a PostgreSQL backend, a Python worker): a
process's CPU is its own time while it is seen, and what it used after its last sample reaches
its parent's children times when the parent reaps it. So the total is, over every process seen,
its own time since the window opened (since birth for one born in it) plus the growth of its
children times, minus, for a process that died in the window, the totals last seen of it (which
its parent's children times then count again in full).

``python -m tests.bench.idle_cost`` prints the figure alone; ``make bench-load`` reports it
with the load's figures.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
import psutil

from include.db import connect
from include.embedded import supervisor
from include.embedded.paths import StatePaths
from include.settings import Settings
from tests.services import embedded_platform

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "300"))
SAMPLE_EVERY_S = 0.2
TARGET_CORES = 0.5


@dataclass
class _Seen:
    program: str
    parent: int
    base_self: float
    base_children: float
    last_self: float
    last_children: float
    alive: bool = True


@dataclass
class TreeCpu:
    """Samples the CPU of a process tree (``root`` and every descendant) on a thread."""

    root: int
    programs: dict[int, str]
    seen: dict[tuple[int, float], _Seen] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _program_of(self, process: psutil.Process) -> str:
        for ancestor in [process, *process.parents()]:
            if ancestor.pid in self.programs:
                return self.programs[ancestor.pid]
        return "supervisord"

    def sample(self, first: bool = False) -> None:
        """Read every process of the tree once."""
        try:
            root = psutil.Process(self.root)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        alive = set()
        for process in processes:
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    times = process.cpu_times()
                    parent = process.ppid()
                    own = times.user + times.system
                    children = times.children_user + times.children_system
                    entry = self.seen.get(key)
                    if entry is None:
                        entry = _Seen(
                            self._program_of(process),
                            parent,
                            own if first else 0.0,
                            children if first else 0.0,
                            own,
                            children,
                        )
                        self.seen[key] = entry
                    entry.last_self, entry.last_children = own, children
                    alive.add(key)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        for key, entry in self.seen.items():
            if key not in alive:
                entry.alive = False
        self.samples += 1

    def run(self) -> None:
        """Sample until ``stop``."""
        self.sample(first=True)
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()
        self.sample()

    def stop(self) -> None:
        """End the sampling (after one last sample)."""
        self._stop.set()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per program over the window (see the module's docstring)."""
        parents = {pid for pid, _ in self.seen}
        used: dict[str, float] = defaultdict(float)
        for entry in self.seen.values():
            used[entry.program] += entry.last_self - entry.base_self
            used[entry.program] += entry.last_children - entry.base_children
            if not entry.alive and entry.parent in parents:
                # Its parent's children times hold it in full once it is reaped.
                used[entry.program] -= entry.last_self + entry.last_children
        return dict(used)


def _wait_warm(settings: Settings, timeout_s: float = 900) -> None:
    """Until the stream committed a batch and a load_postgres run moved rows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connect(settings) as conn:
            batches = conn.execute("SELECT count(*) FROM stream_batches").fetchone()
            loads = conn.execute("SELECT count(*) FROM load_runs").fetchone()
        if batches and batches[0] > 0 and loads and loads[0] > 0:
            return
        time.sleep(2)
    raise TimeoutError("the platform did not stream and load within the warm-up")


def measure_idle_cost(seconds: float = IDLE_SECONDS) -> dict[str, object]:
    """Start the whole platform at the demo rate and measure its CPU over ``seconds``."""
    with embedded_platform(apps=supervisor.APPS, env="dev", generator_rate=50.0) as settings:
        paths = StatePaths.under(settings.state_dir)
        print("idle cost: warming up (first batch, first load)", file=sys.stderr, flush=True)
        _wait_warm(settings)
        root = supervisor.supervisord_pid(paths)
        assert root is not None
        programs = {p.pid: p.name for p in supervisor.process_info(paths) if p.pid}
        tree = TreeCpu(root, programs)
        sampler = threading.Thread(target=tree.run)
        print(f"idle cost: sampling for {seconds:.0f} s", file=sys.stderr, flush=True)
        started = time.monotonic()
        sampler.start()
        time.sleep(seconds)
        tree.stop()
        sampler.join()
        wall = time.monotonic() - started
        load_average = os.getloadavg()
    by_program = {k: round(v, 1) for k, v in sorted(tree.cpu_seconds().items())}
    total = sum(by_program.values())
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": round(total, 1),
        "cores": round(total / wall, 3),
        "cores_by_program": {k: round(v / wall, 3) for k, v in by_program.items()},
        "samples": tree.samples,
        "processes_seen": len(tree.seen),
        "load_average": load_average,
        "target_cores": TARGET_CORES,
        "met": total / wall <= TARGET_CORES,
    }


def main() -> None:
    """Print the idle cost as JSON."""
    print(orjson.dumps(measure_idle_cost(), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
