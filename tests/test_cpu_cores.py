"""The cores the service sizes itself for: affinity capped by a cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facedemo import cpu_cores
from facedemo.cpu_cores import cgroup_cpu_quota, usable_cores


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_cores.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


def test_a_cgroup_v2_quota_caps_the_cores(tmp_path: Path, eight_cores: None) -> None:
    write(tmp_path / "cpu.max", "400000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 4.0
    assert usable_cores(tmp_path) == 4


def test_a_fractional_quota_rounds_up(tmp_path: Path, eight_cores: None) -> None:
    write(tmp_path / "cpu.max", "150000 100000\n")
    assert usable_cores(tmp_path) == 2
    write(tmp_path / "cpu.max", "10000 100000\n")
    assert usable_cores(tmp_path) == 1


def test_no_limit_leaves_the_affinity_mask(tmp_path: Path, eight_cores: None) -> None:
    write(tmp_path / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cores(tmp_path) == 8


def test_a_quota_above_the_mask_does_not_raise_it(tmp_path: Path, eight_cores: None) -> None:
    write(tmp_path / "cpu.max", "1600000 100000\n")
    assert usable_cores(tmp_path) == 8


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_a_cgroup_v1_quota_caps_the_cores(tmp_path: Path, eight_cores: None, folder: str) -> None:
    write(tmp_path / folder / "cpu.cfs_quota_us", "300000\n")
    write(tmp_path / folder / "cpu.cfs_period_us", "100000\n")
    assert usable_cores(tmp_path) == 3


def test_a_cgroup_v1_quota_of_minus_one_is_no_limit(tmp_path: Path, eight_cores: None) -> None:
    write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert usable_cores(tmp_path) == 8


@pytest.mark.parametrize("text", ["", "garbage", "0 100000", "400000 0"])
def test_an_unreadable_quota_is_no_limit(tmp_path: Path, eight_cores: None, text: str) -> None:
    write(tmp_path / "cpu.max", text)
    assert usable_cores(tmp_path) == 8


def test_without_affinity_masks_the_cpu_count_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(cpu_cores.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(cpu_cores.os, "cpu_count", lambda: 6)
    assert usable_cores(tmp_path) == 6
    monkeypatch.setattr(cpu_cores.os, "cpu_count", lambda: None)
    assert usable_cores(tmp_path) == 1


def test_this_machine_has_at_least_one_usable_core() -> None:
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
