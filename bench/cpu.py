"""Where a bench's CPU went: a process's CPU seconds and the machine's busy share, from /proc.

    before = cpu_sample(server.pid)
    ...  # the load
    use = CpuUse.between(before, cpu_sample(server.pid))

A server that spends all of the machine's cores is limited by its CPU, and only less work a
request makes it faster; one that leaves the cores idle waits on something else. Linux only:
elsewhere `cpu_sample` gives None and the benches print "-".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class CpuSample:
    """Counters at one moment: a process's CPU seconds, and the machine's clock ticks."""

    process_seconds: float  # user + system CPU of the process (all its threads) so far
    busy_ticks: int  # the machine's ticks spent on anything but idle and I/O wait, all cores
    total_ticks: int


@dataclass(frozen=True)
class CpuUse:
    """The CPU spent between two samples."""

    process_seconds: float = 0.0
    busy_ticks: int = 0
    total_ticks: int = 0

    @classmethod
    def between(cls, before: CpuSample | None, after: CpuSample | None) -> CpuUse | None:
        """The use from `before` to `after`; None when either sample is missing."""
        if before is None or after is None:
            return None
        return cls(
            after.process_seconds - before.process_seconds,
            after.busy_ticks - before.busy_ticks,
            after.total_ticks - before.total_ticks,
        )

    def __add__(self, other: CpuUse) -> CpuUse:
        return CpuUse(
            self.process_seconds + other.process_seconds,
            self.busy_ticks + other.busy_ticks,
            self.total_ticks + other.total_ticks,
        )

    @staticmethod
    def total(uses: list[CpuUse | None]) -> CpuUse | None:
        """The sum of `uses`; None when any of them is missing."""
        if any(use is None for use in uses):
            return None
        return sum((use for use in uses if use is not None), CpuUse())

    @property
    def machine_busy(self) -> float:
        """The share of all cores' time that was busy (0..1)."""
        return self.busy_ticks / self.total_ticks if self.total_ticks else 0.0


def cpu_sample(pid: int) -> CpuSample | None:
    """The counters of process `pid` and of the machine now; None without /proc."""
    try:
        process = (PROC / str(pid) / "stat").read_text()
        machine = (PROC / "stat").read_text().splitlines()[0]
    except OSError:
        return None
    # Fields after the command name (which may hold spaces): state is the 3rd field of stat(5),
    # utime and stime the 14th and 15th.
    fields = process.rsplit(")", 1)[1].split()
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    process_seconds = (int(fields[11]) + int(fields[12])) / ticks_per_second
    # "cpu user nice system idle iowait irq softirq steal guest guest_nice", summed over the
    # cores; guest time is already in user time.
    ticks = [int(value) for value in machine.split()[1:9]]
    idle = ticks[3] + ticks[4]
    return CpuSample(process_seconds, sum(ticks) - idle, sum(ticks))
