"""How many CPU cores this process may use, which sizes its thread pools and call bounds.

`os.cpu_count()` counts the host's cores. In a container with a CPU limit (deploy/k8s asks for
4 cores) on a large host, that would size the lanes and the detector's call bound for 64 or
more cores: threads that only wait for the quota, each holding its image's memory. What counts
instead is the smaller of the cores the process may be scheduled on (its affinity mask) and its
cgroup's CPU quota, rounded up (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us` and
`cpu.cfs_period_us`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may use: at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks on this platform
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores, or None when there is none (or none can
    be read)."""
    v2 = _read_fields(cgroup_root / "cpu.max")
    if v2 is not None:
        return _quota(*v2[:2]) if len(v2) >= 2 else None
    for v1 in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct"):
        quota = _read_fields(v1 / "cpu.cfs_quota_us")
        period = _read_fields(v1 / "cpu.cfs_period_us")
        if quota and period:
            return _quota(quota[0], period[0])
    return None


def _quota(quota: str, period: str) -> float | None:
    """`quota` microseconds of CPU a `period`, in cores; None for "max" or -1 (no limit)."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max"
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def _read_fields(path: Path) -> list[str] | None:
    try:
        return path.read_text().split()
    except OSError:
        return None
