"""Device choice with TensorFlow's device list mocked: no GPU is needed to test the GPU paths."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

from facedemo.devices import choose_device, select_device
from facedemo.errors import DeviceUnavailableError
from facedemo.registry import Registry


@dataclass
class FakeGPU:
    name: str


@dataclass
class FakeExperimental:
    growth: list[tuple[str, bool]] = field(default_factory=list)
    initialised: bool = False

    def set_memory_growth(self, device: FakeGPU, enable: bool) -> None:
        if self.initialised:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        self.growth.append((device.name, enable))

    def get_device_details(self, device: FakeGPU) -> dict[str, Any]:
        return {"device_name": f"NVIDIA H200 ({device.name})", "compute_capability": (9, 0)}


@dataclass
class FakeThreading:
    op_threads: list[int] = field(default_factory=list)
    initialised: bool = False

    def set_intra_op_parallelism_threads(self, threads: int) -> None:
        if self.initialised:
            raise RuntimeError("Intra op parallelism cannot be modified after initialization.")
        self.op_threads.append(threads)


@dataclass
class FakeConfig:
    """Stands in for tf.config: a device list and a record of what was configured."""

    gpus: list[FakeGPU]
    experimental: FakeExperimental = field(default_factory=FakeExperimental)
    threading: FakeThreading = field(default_factory=FakeThreading)
    visible: list[tuple[list[Any], str]] = field(default_factory=list)

    def list_physical_devices(self, kind: str) -> list[FakeGPU]:
        return list(self.gpus) if kind == "GPU" else []

    def set_visible_devices(self, devices: list[Any], kind: str) -> None:
        if self.experimental.initialised:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        self.visible.append((devices, kind))


def fake_config(gpu_count: int, *, initialised: bool = False) -> FakeConfig:
    gpus = [FakeGPU(f"/physical_device:GPU:{index}") for index in range(gpu_count)]
    return FakeConfig(
        gpus=gpus,
        experimental=FakeExperimental(initialised=initialised),
        threading=FakeThreading(initialised=initialised),
    )


@pytest.mark.parametrize(
    ("requested", "gpu_count", "expected"),
    [
        ("auto", 0, "CPU:0"),
        ("auto", 2, "GPU:0"),
        ("cpu", 0, "CPU:0"),
        ("cpu", 1, "CPU:0"),
        ("gpu", 1, "GPU:0"),
    ],
)
def test_choose_device(requested: str, gpu_count: int, expected: str) -> None:
    assert choose_device(requested, gpu_count) == expected


def test_unknown_device_setting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, gpu"):
        choose_device("tpu", 0)


def test_auto_without_gpu_uses_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    config = fake_config(0)
    with caplog.at_level(logging.INFO, logger="facedemo.devices"):
        choice = select_device("auto", config)
    assert (choice.name, choice.kind, choice.gpu_name) == ("CPU:0", "cpu", None)
    assert choice.visible_gpus == 0
    assert config.experimental.growth == [] and config.visible == []
    assert "models run on CPU:0" in caplog.text


def test_auto_with_gpus_uses_the_first_with_memory_growth_on_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = fake_config(2)
    with caplog.at_level(logging.INFO, logger="facedemo.devices"):
        choice = select_device("auto", config)
    assert (choice.name, choice.kind, choice.visible_gpus) == ("GPU:0", "gpu", 2)
    assert choice.gpu_name == "NVIDIA H200 (/physical_device:GPU:0)"
    assert config.experimental.growth == [
        ("/physical_device:GPU:0", True),
        ("/physical_device:GPU:1", True),
    ]
    assert config.visible == []  # GPUs stay visible
    assert "models run on GPU:0 (NVIDIA H200" in caplog.text
    info = choice.info()
    assert info["kind"] == "gpu" and info["name"] == "GPU:0"
    assert info["gpu_name"].startswith("NVIDIA H200")
    assert info["tensorflow"] == tf.__version__


def test_cpu_forced_hides_the_gpus() -> None:
    config = fake_config(1)
    choice = select_device("cpu", config)
    assert (choice.name, choice.kind, choice.gpu_name) == ("CPU:0", "cpu", None)
    assert config.visible == [([], "GPU")]
    assert config.experimental.growth == [("/physical_device:GPU:0", True)]
    assert "gpu_name" not in choice.info()


def test_gpu_demanded_and_present() -> None:
    choice = select_device("gpu", fake_config(1))
    assert (choice.name, choice.kind) == ("GPU:0", "gpu")


def test_gpu_demanded_but_absent_fails_fast() -> None:
    with pytest.raises(DeviceUnavailableError, match="'gpu' was requested.*sees no GPU"):
        select_device("gpu", fake_config(0))


def test_already_initialised_gpus_are_tolerated(caplog: pytest.LogCaptureFixture) -> None:
    config = fake_config(1, initialised=True)
    with caplog.at_level(logging.WARNING, logger="facedemo.devices"):
        choice = select_device("cpu", config)
    assert choice.name == "CPU:0"
    assert "could not enable memory growth" in caplog.text
    assert "could not hide the GPUs" in caplog.text


def test_op_threads_limit_tensorflow_ops_and_zero_leaves_the_default() -> None:
    limited = fake_config(0)
    select_device("cpu", limited, op_threads=1)
    assert limited.threading.op_threads == [1]
    untouched = fake_config(0)
    select_device("cpu", untouched)
    assert untouched.threading.op_threads == []


def test_op_threads_on_a_running_tensorflow_are_tolerated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="facedemo.devices"):
        choice = select_device("auto", fake_config(0, initialised=True), op_threads=2)
    assert choice.name == "CPU:0"
    assert "could not limit TensorFlow ops to 2 CPU thread(s)" in caplog.text


def test_the_op_threads_setting_reaches_tensorflow(tiny_models_dir: Path) -> None:
    # A fresh process: this one's TensorFlow may be running already, with its threads fixed.
    script = (
        "import sys, tensorflow as tf; from pathlib import Path; "
        "from facedemo.config import Settings; from facedemo.registry import Registry; "
        "Registry.from_settings(Settings(models_dir=Path(sys.argv[1]), device='cpu')); "
        "print(tf.config.threading.get_intra_op_parallelism_threads())"
    )
    environment = {**os.environ, "FACEDEMO_OP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_models_dir)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "1"


def test_registry_load_fails_fast_when_gpu_demanded_without_one(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    with pytest.raises(DeviceUnavailableError, match="no GPU"):
        Registry.load(tiny_models_dir, device="gpu")
