"""The idle-cost sampler counts short-lived processes: children that live for less than one
sample interval, and the tail of a process after its last sample."""

from __future__ import annotations

import resource
import subprocess
import sys
import threading

import pytest

from tests.bench.idle_cost import TreeCpu

# A parent that starts short-lived children one after another, each burning CPU for ~40 ms
# (shorter than the 200 ms sample interval), then waits for them, then exits.
PARENT = """
import subprocess, sys
burn = "import time\\nend = time.process_time() + 0.04\\nwhile time.process_time() < end: pass"
for _ in range(15):
    subprocess.run([sys.executable, "-S", "-c", burn], check=True)
"""


@pytest.mark.timeout(120)
def test_short_lived_children_are_counted() -> None:
    # The tree's root is this test's own child, a sleeping shell that runs the parent.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    root = subprocess.Popen(["/bin/sh", "-c", f"sleep 0.5; {sys.executable} -S -c '{PARENT}'"])
    tree = TreeCpu(root.pid, {root.pid: "root"})
    sampler = threading.Thread(target=tree.run)
    sampler.start()
    root.wait(timeout=100)
    # The root is gone now; what it reaped is in our own children times.
    tree.stop()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    actual = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    counted = sum(tree.cpu_seconds().values())
    assert actual > 0.6, "the children burned their CPU"
    # The root itself died (reaped by us, not in the tree): its own final totals are lost
    # after its last sample, which is at most one interval of a sleeping shell.
    assert counted == pytest.approx(actual, rel=0.15)
