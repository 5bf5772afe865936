"""Device choice for the registry: which TensorFlow device runs the models, decided once at load.

`choose_device` is the rule (pure); `select_device` applies it to TensorFlow's configuration. The
configuration object is a parameter, so tests can present fake GPUs without having one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import tensorflow as tf

from facedemo.errors import DeviceUnavailableError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "gpu")
CPU_DEVICE = "CPU:0"
GPU_DEVICE = "GPU:0"


@dataclass(frozen=True)
class DeviceChoice:
    """The device the models run on, and what was visible when it was chosen."""

    name: str
    kind: Literal["cpu", "gpu"]
    gpu_name: str | None
    visible_gpus: int

    def info(self) -> dict[str, str]:
        """A JSON-friendly description: kind, name, TensorFlow version and the GPU's model name."""
        info = {"kind": self.kind, "name": self.name, "tensorflow": tf.__version__}
        if self.gpu_name is not None:
            info["gpu_name"] = self.gpu_name
        return info


def choose_device(requested: str, gpu_count: int) -> str:
    """Return the TensorFlow device name for `requested` ("auto" | "cpu" | "gpu").

    "gpu" with no visible GPU raises DeviceUnavailableError rather than quietly using the CPU.
    """
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}, not {requested!r}")
    if requested == "cpu":
        return CPU_DEVICE
    if gpu_count > 0:
        return GPU_DEVICE
    if requested == "gpu":
        raise DeviceUnavailableError(
            "device 'gpu' was requested (FACEDEMO_DEVICE=gpu) but TensorFlow sees no GPU; check "
            "that the host has an NVIDIA driver, that the container runs with --gpus all, and that "
            "tensorflow[and-cuda] is installed; or set FACEDEMO_DEVICE=auto or cpu"
        )
    return CPU_DEVICE


def select_device(requested: str, config: Any = None, *, op_threads: int = 0) -> DeviceChoice:
    """Choose the device, turn on GPU memory growth and, for "cpu", hide the GPUs; log the choice.

    `op_threads` > 0 limits the CPU threads one TensorFlow op may use (intra-op parallelism; 0
    leaves TensorFlow's default, one per core). `config` defaults to `tf.config`; tests pass a
    stand-in with the same methods. Call this before TensorFlow creates any tensor: afterwards
    these settings can no longer change, which is logged and tolerated (the models are still
    placed on the chosen device).
    """
    config = tf.config if config is None else config
    if op_threads > 0:
        _limit_op_threads(op_threads, config)
    gpus = list(config.list_physical_devices("GPU"))
    name = choose_device(requested, len(gpus))
    for gpu in gpus:
        # Without memory growth TensorFlow reserves almost the whole card at start.
        try:
            config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:
            logger.warning("could not enable memory growth on %s: %s", gpu.name, error)
    gpu_name = None
    if name == GPU_DEVICE:
        gpu_name = _gpu_model_name(config, gpus[0])
    elif gpus:
        try:
            config.set_visible_devices([], "GPU")
        except RuntimeError as error:
            logger.warning("could not hide the GPUs from TensorFlow: %s", error)
    choice = DeviceChoice(
        name=name,
        kind="gpu" if name == GPU_DEVICE else "cpu",
        gpu_name=gpu_name,
        visible_gpus=len(gpus),
    )
    logger.info(
        "models run on %s%s (requested %r, %d GPU(s) visible, TensorFlow %s)",
        choice.name,
        f" ({gpu_name})" if gpu_name else "",
        requested,
        len(gpus),
        tf.__version__,
    )
    return choice


def _limit_op_threads(threads: int, config: Any) -> None:
    """Let one TensorFlow op use at most `threads` CPU threads (TensorFlow's intra-op pool).

    A server runs several requests at once, so the cores are busy without splitting each op;
    split, an op costs more CPU (the models: 1.5 against 1.0 ms a face, bench/README.md).
    """
    try:
        config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError as error:  # TensorFlow already running with another value
        logger.warning("could not limit TensorFlow ops to %d CPU thread(s): %s", threads, error)


def _gpu_model_name(config: Any, gpu: Any) -> str:
    try:
        details = config.experimental.get_device_details(gpu)
    except (RuntimeError, ValueError):
        return "unknown GPU"
    return str(details.get("device_name", "unknown GPU"))
