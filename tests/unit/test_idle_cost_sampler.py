"""The idle-cost sampler counts short-lived processes: children that live for less than one
sample interval, and the tail of a process after its last sample."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.bench.idle_cost import TreeCpu

# A parent that starts short-lived children one after another, each burning CPU for ~40 ms
# (shorter than the 200 ms sample interval), waits for them, and writes the CPU it and its
# children used, as the kernel accounts it, before it exits.
PARENT = """
import resource, subprocess, sys
burn = "import time\\nend = time.process_time() + 0.04\\nwhile time.process_time() < end: pass"
for _ in range(15):
    subprocess.run([sys.executable, "-S", "-c", burn], check=True)
used = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF,
           resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
open(sys.argv[1], "w").write(repr(used))
"""


@pytest.mark.timeout(120)
def test_short_lived_children_are_counted(tmp_path: Path) -> None:
    report, script = tmp_path / "used", tmp_path / "parent.py"
    script.write_text(PARENT)
    # The tree's root outlives the parent, as supervisord outlives its programs' children.
    root = subprocess.Popen(
        ["/bin/sh", "-c", f"sleep 0.5; {sys.executable} -S {script} {report}; sleep 60"]
    )
    try:
        tree = TreeCpu(root.pid, {root.pid: "root"})
        sampler = threading.Thread(target=tree.run)
        sampler.start()
        deadline = time.monotonic() + 100
        while not report.exists() or psutil.Process(root.pid).children():
            if report.exists() and all(
                "sleep" in " ".join(c.cmdline()) for c in psutil.Process(root.pid).children()
            ):
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the shell has reaped the parent
        tree.stop()
        sampler.join()
    finally:
        root.kill()
        root.wait()
    used = float(report.read_text())
    counted = sum(tree.cpu_seconds().values())
    assert used > 0.6, "the children burned their CPU"
    # Most children lived and died between two samples: their own times, as seen, miss them.
    seen_alive = sum(e.last_self - e.base_self for e in tree.seen.values())
    assert seen_alive < 0.7 * used
    # Counted also holds the shell's own time and the parent's exit after its report; the
    # kernel's per-process times are in clock ticks (10 ms) where getrusage has microseconds.
    assert used - 0.05 <= counted <= used + 0.15
