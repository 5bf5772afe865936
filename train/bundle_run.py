"""What every training script's `main()` does once its model and objectives are built: train,
calibrate and report on the held-out splits, and write the bundle with its manifest and card."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras

from facedemo.age_distribution import Tempering
from train.architectures import count_flops
from train.bundle import write_bundle
from train.common import PreparedData, log, trained_fields, training_record, validation_report
from train.objectives import Objectives, train_model
from train.utkface import ArraySet


@dataclass(frozen=True)
class BundleRecipe:
    """What one script's bundle is: its manifest's name, task and outputs, how the script sums
    up its validation report in the log, and how it writes its model card."""

    script: str  # e.g. "train.classifier", as the training record names it
    manifest: Mapping[str, Any]  # name, task, outputs
    summary: Callable[[dict[str, Any], Tempering], str]  # the validation report in one line
    render_card: Callable[[argparse.Namespace, dict[str, Any]], str]


def train_and_write_bundle(
    recipe: BundleRecipe,
    args: argparse.Namespace,
    argv: list[str],
    data: PreparedData,
    model: keras.Model,
    objectives: Objectives,
    *,
    train: ArraySet,
    started: float,
    extra_record: Mapping[str, Any] | None = None,
) -> int:
    """Train `model` on `train`, report on the calibration and validation splits, and write its
    bundle into args.models_dir; `extra_record` joins the manifest's training record. Exit 0."""
    log(f"model: {model.count_params()} parameters, {count_flops(model) / 1e6:.1f} MFLOPs per face")
    calibration, validation = data.splits["calibration"], data.splits["validation"]
    budget = train_model(model, args, objectives, train, validation)
    report, tempering = validation_report(model, calibration, validation)
    log(f"validation: {recipe.summary(report, tempering)} (n={report['n']})")
    training = training_record(
        args, data, budget, time.monotonic() - started, recipe.script, argv
    ) | dict(extra_record or {})
    manifest_fields: dict[str, Any] = {
        **recipe.manifest,
        **trained_fields(args, model, tempering, report, training),
    }
    card = recipe.render_card(args, manifest_fields)
    bundle = write_bundle(args.models_dir, model, manifest_fields, card)
    log(f"wrote {bundle}")
    return 0
