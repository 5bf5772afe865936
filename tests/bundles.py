"""Tiny random-weight model bundles with the real bundle contract, for tests.

They are written with `train.bundle.write_bundle`, the same writer the training scripts use, so a
test bundle and a trained bundle differ only in their weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, GENDER_LABELS, REGRESSOR_NAME
from train.bundle import write_bundle

FEATURE_CHANNELS = 8
INTERVAL_LEVEL = 0.8


def _features(inputs: Any, seed: int) -> Any:
    """A strided convolution and global pooling: just enough to make outputs depend on the image."""
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    convolved = keras.layers.Conv2D(
        FEATURE_CHANNELS,
        3,
        strides=2,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed + 1),
        name="conv",
    )(scaled)
    return keras.layers.GlobalAveragePooling2D(name="pool")(convolved)


def _dense(units: int, activation: str | None, name: str, seed: int) -> keras.layers.Dense:
    # Large initial weights so that different crops give visibly different outputs.
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1),
        name=name,
    )


def _flops_per_face(size: int, head_units: int) -> int:
    """Multiply-adds x 2 of the convolution and the dense heads (rescaling and pooling ignored)."""
    out_side = (size + 1) // 2
    convolution = out_side * out_side * FEATURE_CHANNELS * 3 * 3 * 3
    return 2 * (convolution + FEATURE_CHANNELS * head_units)


def _classifier(size: int, ages: int, seed: int, auxiliary: bool) -> keras.Model:
    inputs = keras.Input((size, size, 3), dtype="float32", name="face")
    features = _features(inputs, seed)
    outputs = {
        "age_bucket": _dense(len(AGE_BUCKET_LABELS), "softmax", "age_bucket", seed + 10)(features),
        "gender": _dense(len(GENDER_LABELS), "softmax", "gender", seed + 20)(features),
    }
    if auxiliary:
        outputs["age_logits"] = _dense(ages, None, "age_logits", seed + 30)(features)
    return keras.Model(inputs, outputs, name="tiny_classifier")


def _regressor(size: int, ages: int, seed: int, auxiliary: bool) -> keras.Model:
    inputs = keras.Input((size, size, 3), dtype="float32", name="face")
    features = _features(inputs, seed + 100)
    outputs = {"age_logits": _dense(ages, None, "age_logits", seed + 110)(features)}
    if auxiliary:
        outputs["gender"] = _dense(len(GENDER_LABELS), "softmax", "gender", seed + 120)(features)
    return keras.Model(inputs, outputs, name="tiny_regressor")


def _calibration(temperature: float, age_exponent: float) -> dict[str, Any]:
    return {
        "temperature": temperature,
        "age_exponent": age_exponent,
        "interval_level": INTERVAL_LEVEL,
        "fitted_on": "none: random weights for tests",
    }


def _training_record(seed: int) -> dict[str, Any]:
    return {
        "data": "none: random weights for tests",
        "data_sha256": None,
        "split": {"train": 0, "validation": 0, "test": 0, "seed": seed},
        "config": {"initializer_seed": seed},
        "command": "tests/bundles.py write_tiny_bundles",
        "wall_time_s": 0.0,
    }


def _model_card(name: str, version: str) -> str:
    return (
        f"# {name} {version} (test bundle)\n\n"
        "Random weights, written by the test suite. Its predictions mean nothing; it exists to\n"
        "exercise the bundle format, the registry and the service end to end.\n"
    )


def write_tiny_bundles(
    models_dir: Path,
    *,
    size: int = 32,
    version: str = "1.0.0",
    ages: int = 101,
    temperature: float = 1.0,
    age_exponent: float = 0.0,
    seed: int = 0,
    auxiliary_heads: bool = True,
) -> None:
    """Write a random-weight classifier and regressor bundle under `models_dir`.

    With `auxiliary_heads` (as the trained bundles from 1.1.0 on) the classifier also has an
    `age_logits` head (temperature 2 x `temperature`, both with `age_exponent`) and the regressor
    a `gender` head; without,
    each has only its required heads (as 1.0.0). Weights come from seeded initialisers (no global
    random state is touched), so the same arguments always give the same predictions.
    """
    input_spec = {"height": size, "width": size}
    age_logits = {"kind": "logits", "labels": [str(age) for age in range(ages)]}
    gender = {"kind": "probabilities", "labels": list(GENDER_LABELS)}
    classifier_outputs: dict[str, Any] = {
        "age_bucket": {"kind": "probabilities", "labels": list(AGE_BUCKET_LABELS)},
        "gender": gender,
    }
    regressor_outputs: dict[str, Any] = {"age_logits": age_logits}
    if auxiliary_heads:
        classifier_outputs["age_logits"] = age_logits
        regressor_outputs["gender"] = gender
    write_bundle(
        models_dir,
        _classifier(size, ages, seed, auxiliary_heads),
        {
            "name": CLASSIFIER_NAME,
            "version": version,
            "task": "age-gender-classification",
            "input": input_spec,
            "outputs": classifier_outputs,
            "calibration": _calibration(2 * temperature, age_exponent) if auxiliary_heads else None,
            "flops_per_face": _flops_per_face(
                size, sum(len(spec["labels"]) for spec in classifier_outputs.values())
            ),
            "training": _training_record(seed),
            "metrics": {},
        },
        _model_card(CLASSIFIER_NAME, version),
    )
    write_bundle(
        models_dir,
        _regressor(size, ages, seed, auxiliary_heads),
        {
            "name": REGRESSOR_NAME,
            "version": version,
            "task": "age-regression",
            "input": input_spec,
            "outputs": regressor_outputs,
            "calibration": _calibration(temperature, age_exponent),
            "flops_per_face": _flops_per_face(
                size, sum(len(spec["labels"]) for spec in regressor_outputs.values())
            ),
            "training": _training_record(seed),
            "metrics": {},
        },
        _model_card(REGRESSOR_NAME, version),
    )
