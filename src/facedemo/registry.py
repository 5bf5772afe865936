"""Model bundles on disk -> checked, loaded and warmed Keras models on one device.

`Registry.load` finds `models_dir/<name>/<version>/` for both required names (the newest version
unless pinned), checks each bundle (files, manifest, sha256, output contract), loads the models
with Keras' safe mode on the chosen device, compiles one `tf.function` per model and runs every
padded batch size once, so the first request is as fast as the rest. `Registry.predict` runs a
batch of face crops through both models and hands their heads to `head_combination`, which
turns them into one answer per crop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facedemo.bundles import REQUIRED_MODELS, check_contract, find_bundle, read_manifest
from facedemo.config import Settings
from facedemo.devices import DeviceChoice, select_device
from facedemo.errors import BundleError, NotReadyError, UnknownModelError
from facedemo.head_combination import FacePredictions, HeadCombination
from facedemo.manifest import (
    CLASSIFIER_NAME,
    MODEL_FILE,
    Manifest,
)

logger = logging.getLogger(__name__)

# Batches are zero-padded up to one of these sizes (larger inputs are cut into chunks of the
# largest), so the device only ever sees six shapes, all of them run once during `load`.
PADDED_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
MAX_BATCH_SIZE = PADDED_BATCH_SIZES[-1]

ModelFunction = Callable[[tf.Tensor], dict[str, tf.Tensor]]


# ----------------------------------------------------------------------------- loaded models


@dataclass(frozen=True)
class _LoadedModel:
    manifest: Manifest
    model: keras.Model
    function: ModelFunction


def _load_model(bundle_dir: Path, manifest: Manifest, device: str) -> _LoadedModel:
    where = f"{manifest.name} {manifest.version}"
    path = bundle_dir / MODEL_FILE
    with tf.device(device):
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # Keras raises many types for a bad file; all mean "unusable".
            raise BundleError(f"{where}: could not load {path}: {error}") from error
    size = (manifest.input.height, manifest.input.width)
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (*size, 3):
        shapes = [tuple(tensor.shape) for tensor in inputs]
        raise BundleError(
            f"{where}: model inputs are {shapes}, the manifest says (None, {size[0]}, {size[1]}, 3)"
        )
    _check_output_shapes(where, manifest, getattr(model, "output", None))

    @tf.function(input_signature=[tf.TensorSpec((None, *size, 3), tf.float32)])
    def run(batch: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(batch, training=False)

    return _LoadedModel(manifest=manifest, model=model, function=run)


def _check_output_shapes(where: str, manifest: Manifest, outputs: Any) -> None:
    """The model's output dict must have the manifest's names, one unit per label."""
    if not isinstance(outputs, dict):
        raise BundleError(f"{where}: model outputs must be a dict of named tensors")
    actual = {name: tuple(tensor.shape[1:]) for name, tensor in outputs.items()}
    expected = {name: (len(spec.labels),) for name, spec in manifest.outputs.items()}
    if actual != expected:
        raise BundleError(f"{where}: model outputs {actual} do not match the manifest's {expected}")


def _padded_size(count: int) -> int:
    return next(size for size in PADDED_BATCH_SIZES if size >= count)


def _warm_up(loaded: _LoadedModel, device: str, stop: threading.Event | None = None) -> None:
    """Run every padded batch size once so the first request pays no tracing or autotuning."""
    size = (loaded.manifest.input.height, loaded.manifest.input.width)
    where = f"{loaded.manifest.name} {loaded.manifest.version}"
    with tf.device(device):
        for batch_size in PADDED_BATCH_SIZES:
            stop_if_asked(stop)
            outputs = loaded.function(tf.zeros((batch_size, *size, 3), tf.float32))
            shapes = {name: tuple(tensor.shape) for name, tensor in outputs.items()}
            expected = {
                name: (batch_size, len(spec.labels))
                for name, spec in loaded.manifest.outputs.items()
            }
            if shapes != expected:
                raise BundleError(f"{where}: a batch of {batch_size} gave {shapes}, not {expected}")


class Registry:
    """The loaded classifier and regressor, on one device, ready to predict."""

    def __init__(self, models: Mapping[str, _LoadedModel], device: DeviceChoice) -> None:
        """Wrap already checked and warmed models; use `Registry.load` to build one."""
        self._models = dict(models)
        self._device = device
        classifier = self._models[CLASSIFIER_NAME].manifest
        self._input_size = (classifier.input.height, classifier.input.width)
        self._combination = HeadCombination.from_manifests(self.manifests())

    @classmethod
    def load(
        cls,
        models_dir: Path,
        *,
        device: str = "auto",
        pins: Mapping[str, str] | None = None,
        op_threads: int = 0,
        stop: threading.Event | None = None,
    ) -> Registry:
        """Find, check, load and warm up both models; BundleError / DeviceUnavailableError if not.

        `pins` maps a model name to the version to load instead of the newest one; `op_threads`
        > 0 limits the CPU threads of one TensorFlow op (devices.select_device). Once `stop` is
        set, loading ends at its next step with NotReadyError (`stop_if_asked`).
        """
        pins = dict(pins or {})
        unknown_pins = sorted(set(pins) - set(REQUIRED_MODELS))
        if unknown_pins:
            raise BundleError(
                f"pinned versions for unknown models {', '.join(unknown_pins)}; "
                f"known models: {', '.join(REQUIRED_MODELS)}"
            )
        if not models_dir.is_dir():
            raise BundleError(f"models directory {models_dir} does not exist")
        # Checked before TensorFlow touches a device, so memory growth can still be set.
        try:
            bundles = {
                name: find_bundle(models_dir, name, pins.get(name)) for name in REQUIRED_MODELS
            }
            manifests = {name: read_manifest(bundle) for name, bundle in bundles.items()}
        except OSError as error:  # e.g. a folder or file this process's user may not read
            raise BundleError(f"cannot read the model bundles in {models_dir}: {error}") from error
        for manifest in manifests.values():
            check_contract(manifest)
        sizes = {name: (m.input.height, m.input.width) for name, m in manifests.items()}
        if len(set(sizes.values())) != 1:
            raise BundleError(f"the models must share one input size (height, width), got {sizes}")

        stop_if_asked(stop)
        choice = select_device(device, op_threads=op_threads)
        started = time.perf_counter()
        models = {}
        for name, bundle in bundles.items():
            stop_if_asked(stop)
            models[name] = _load_model(bundle, manifests[name], choice.name)
            _warm_up(models[name], choice.name, stop)
            logger.info(
                "loaded %s %s from %s (%d parameters, sha256 %s...)",
                name,
                manifests[name].version,
                bundle,
                manifests[name].parameters,
                manifests[name].model_sha256[:12],
            )
        logger.info(
            "models loaded and warmed up on %s in %.1f s (batch sizes %s)",
            choice.name,
            time.perf_counter() - started,
            ", ".join(map(str, PADDED_BATCH_SIZES)),
        )
        return cls(models, choice)

    @classmethod
    def from_settings(cls, settings: Settings, stop: threading.Event | None = None) -> Registry:
        """`Registry.load` with the models_dir, device, model_pins and op_threads settings."""
        return cls.load(
            settings.models_dir,
            device=settings.device,
            pins=settings.model_pins,
            op_threads=settings.op_threads,
            stop=stop,
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the face crops both models take."""
        return self._input_size

    @property
    def device(self) -> str:
        """The TensorFlow device the models run on, "CPU:0" or "GPU:0"."""
        return self._device.name

    @property
    def device_info(self) -> dict[str, str]:
        """Kind ("cpu" | "gpu"), device name, TensorFlow version and, on a GPU, its model name."""
        return self._device.info()

    def manifests(self) -> dict[str, Manifest]:
        """The loaded bundles' manifests by model name."""
        return {name: loaded.manifest for name, loaded in self._models.items()}

    def manifest(self, name: str) -> Manifest:
        """The manifest of the loaded model `name`; UnknownModelError (listing names) otherwise."""
        loaded = self._models.get(name)
        if loaded is None:
            raise UnknownModelError(name, self._models)
        return loaded.manifest

    def predict(self, crops: np.ndarray) -> FacePredictions:
        """Run both models on uint8 face crops (n, height, width, 3) at `input_size`; n may be 0.

        Safe to call from several threads at once: each call pads into its own buffer, and the
        compiled functions were traced during `load`.
        """
        height, width = self._input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be a uint8 numpy array, got {_describe(crops)}")
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"crops must have shape (n, {height}, {width}, 3), got {crops.shape}")
        count = len(crops)
        outputs = {
            name: {
                output: np.empty((count, len(spec.labels)), np.float32)
                for output, spec in loaded.manifest.outputs.items()
            }
            for name, loaded in self._models.items()
        }
        for start in range(0, count, MAX_BATCH_SIZE):
            chunk = crops[start : start + MAX_BATCH_SIZE]
            stop = start + len(chunk)
            padded = np.zeros((_padded_size(len(chunk)), height, width, 3), np.float32)
            padded[: len(chunk)] = chunk
            with tf.device(self._device.name):
                batch = tf.convert_to_tensor(padded)
                results = {name: loaded.function(batch) for name, loaded in self._models.items()}
            for name, result in results.items():
                for output, values in result.items():
                    outputs[name][output][start:stop] = values.numpy()[: len(chunk)]
        return self._combination.combine(outputs)


def stop_if_asked(stop: threading.Event | None) -> None:
    """NotReadyError once `stop` is set: the service is shutting down while it loads.

    A thread cannot be interrupted, so a load whose application has stopped ends itself between
    steps rather than spend seconds of CPU on models nobody will use, and hold up an interpreter
    exit, which waits for every thread. (A daemon thread is no way out: one still inside
    TensorFlow when the interpreter exits hangs it.)
    """
    if stop is not None and stop.is_set():
        raise NotReadyError("loading stopped: the service is shutting down")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype}"
    return type(value).__name__
