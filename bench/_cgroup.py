"""CPU caps for benchmark processes: one cgroup (v1 ``cpu`` controller) per process, made and removed here.

A cap of 0.25 CPU is a CFS quota of 25 ms per 100 ms period. Groups are named ``etcdcron-bench-<pid>-<what>``
so a run only ever touches its own, and leftovers of a killed run (a dead pid in the name) are removed by the
next one. ``problem()`` says, in one line, why caps cannot be had on this machine (no v1 ``cpu`` hierarchy,
not writable), so a benchmark can skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

CPU_ROOT = Path(os.environ.get("ETCDCRON_BENCH_CGROUP_CPU", "/sys/fs/cgroup/cpu"))
PERIOD_US = 100_000
_NAME = re.compile(r"^etcdcron-bench-(\d+)-")


def problem(root: Path = CPU_ROOT) -> str | None:
    """None if CPU-capped cgroups can be made under ``root``, else why not."""
    if not (root / "cpu.cfs_quota_us").exists():
        if Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return "cgroup v2 only (unified hierarchy); this benchmark uses the v1 'cpu' controller"
        return f"no cgroup v1 'cpu' controller at {root}"
    probe = root / f"etcdcron-bench-{os.getpid()}-probe"
    try:
        probe.mkdir()
        (probe / "cpu.cfs_quota_us").write_text(str(PERIOD_US // 4))
    except OSError as e:
        return f"cannot create a cgroup under {root}: {e.strerror} (run as root)"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
    return None


def remove_leftovers(root: Path = CPU_ROOT) -> list[str]:
    """Remove groups of earlier runs whose process is gone (only empty ones can be removed)."""
    removed = []
    for d in root.glob("etcdcron-bench-*"):
        m = _NAME.match(d.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(OSError):
                d.rmdir()
                removed.append(d.name)
    return removed


class CpuGroup:
    """One cgroup with a CPU quota (``cpus`` <= 0: no quota, only accounting of throttling) and a weight
    (``shares``; 1024 is one ordinary process's): on a shared machine a higher weight lets the group get
    up to its quota when other processes compete, so the cap, not the neighbours, is what limits it."""

    def __init__(self, what: str, cpus: float, shares: int = 1024, root: Path = CPU_ROOT) -> None:
        self.path = root / f"etcdcron-bench-{os.getpid()}-{what}"
        self.cpus = cpus
        self.path.mkdir()
        (self.path / "cpu.shares").write_text(str(shares))  # weight against the machine's other work
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota = int(cpus * PERIOD_US) if cpus > 0 else -1
        (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def stat(self) -> dict[str, int]:
        """nr_periods, nr_throttled, throttled_time (ns) so far."""
        out = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            out[key] = int(value)
        return out

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir once the group's processes are gone (they are stopped first); loud if it cannot be."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
