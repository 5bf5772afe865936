"""What both training scripts share: command line, data preparation, time budget, reporting."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from facedemo.accuracy import Estimates, Labels, buckets_of, evaluation_report
from facedemo.age_distribution import Tempering, age_summary
from facedemo.manifest import AGE_BUCKET_LABELS
from train.age_targets import EXPECTED_AGE_L1_WEIGHT, INTERVAL_LEVEL, calibrate
from train.architectures import ARCHITECTURES, count_flops
from train.augment import Degradations
from train.utkface import (
    ArraySet,
    ScanReport,
    dataset_checksum,
    load_arrays,
    random_subset,
    scan_folder,
    stratified_split,
)

SPLIT_FRACTIONS = {"train": 0.8, "calibration": 0.1, "validation": 0.1}
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared/data/utkface"
DEFAULT_SEED = 1234  # the committed bundles' split and initialisation


def base_parser(description: str, default_epochs: int) -> argparse.ArgumentParser:
    """Arguments common to both scripts, with their defaults.

    Each script's docstring has the exact command of its served bundle.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache")
    parser.add_argument(
        "--architecture",
        choices=list(ARCHITECTURES),
        default="separable",
        help="backbone (train/architectures.py)",
    )
    parser.add_argument("--size", type=int, default=64, help="input height and width in pixels")
    parser.add_argument(
        "--stem-stride",
        type=int,
        choices=(2, 3),
        default=2,
        help="stride of the first convolution (3, with a 5x5 kernel: for --size 96)",
    )
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument(
        "--augment",
        type=float,
        default=1.0,
        help="augmentation strength: multiplies the rotation, scale, shift, brightness and "
        "contrast ranges of train/augment.py (0: flips only)",
    )
    for flag, what in (
        ("--zoom-out", "shrunk to 65-90%% inside a border of its edge pixels"),
        ("--greyscale", "made greyscale"),
        ("--low-res", "passed through 16-40 pixels square"),
    ):
        parser.add_argument(
            flag, type=float, default=0.0, help=f"probability that a training image is {what}"
        )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        help="loss weight of a head that learns the face-recognition teacher's embeddings "
        "(train/teacher.py, which must have run first); 0: no teacher",
    )
    parser.add_argument(
        "--teacher-gender-weight",
        type=float,
        default=0.0,
        help="share of each training face's gender target taken from the teacher's out-of-fold "
        "gender probability (train/distill.py; its embeddings must have been computed); "
        "0: the labels only",
    )
    parser.add_argument(
        "--age-l1-weight",
        type=float,
        default=EXPECTED_AGE_L1_WEIGHT,
        help="weight of the L1 term on the expected age in the age head's loss "
        "(train/age_targets.py)",
    )
    parser.add_argument(
        "--age-sigma-growth",
        type=float,
        default=0.0,
        help="years added to the age label distribution's spread (2.5 years at age 25) per year "
        "of age (train/age_targets.py); 0: the same spread at every age",
    )
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--threads", type=int, default=0, help="TensorFlow intra-op threads (0: all)"
    )
    parser.add_argument("--max-minutes", type=float, default=90.0, help="stop early past this")
    parser.add_argument(
        "--limit", type=int, default=0, help="use only N training images (smoke runs)"
    )
    return parser


@dataclasses.dataclass(frozen=True)
class PreparedData:
    splits: dict[str, ArraySet]
    report: ScanReport
    checksum: str
    split_checksums: dict[str, str]


def prepare(args: argparse.Namespace) -> PreparedData:
    """Scan, de-duplicate, split and decode (cached) the UTKFace folder."""
    keras.utils.set_random_seed(args.seed)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    started = time.monotonic()
    images, report = scan_folder(args.data)
    if not images:
        raise ValueError(f"no labelled images found in {args.data}")
    splits = stratified_split(images, SPLIT_FRACTIONS, seed=args.seed)
    if args.limit:
        splits["train"] = random_subset(splits["train"], args.limit, args.seed)
    arrays = {name: load_arrays(items, args.size, args.cache_dir) for name, items in splits.items()}
    log(
        f"data: {report.files} files, {report.parsed} parsed, {len(report.unparseable)} skipped, "
        f"{report.duplicates_dropped} duplicates dropped ({report.conflicting_groups_dropped} "
        f"conflicting groups removed); split "
        + ", ".join(f"{name} {len(items)}" for name, items in splits.items())
        + f" ({time.monotonic() - started:.0f} s)"
    )
    return PreparedData(
        splits=arrays,
        report=report,
        checksum=dataset_checksum(images),
        split_checksums={name: dataset_checksum(items) for name, items in splits.items()},
    )


def degradations_of(args: argparse.Namespace) -> Degradations:
    """The training degradations the command line asks for."""
    return Degradations(
        greyscale=args.greyscale, low_resolution=args.low_res, zoom_out=args.zoom_out
    )


def bucket_weights(ages: np.ndarray, power: float) -> np.ndarray:
    """Per-sample weights (count of the sample's bucket)^-power, normalised to mean 1."""
    buckets = buckets_of(ages.astype(np.float64))
    counts = np.bincount(buckets, minlength=len(AGE_BUCKET_LABELS)).astype(np.float64)
    weights = np.maximum(counts, 1.0)[buckets] ** -power
    return (weights / weights.mean()).astype(np.float32)


def optimizer(args: argparse.Namespace, train_size: int) -> keras.optimizers.AdamW:
    """AdamW with one epoch of linear warm-up, then cosine decay to zero over the other epochs."""
    steps_per_epoch = train_size // args.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=args.learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * (args.epochs - 1)),
        warmup_target=args.learning_rate,
        warmup_steps=steps_per_epoch,
    )
    return keras.optimizers.AdamW(schedule, args.weight_decay)


class TimeBudget(keras.callbacks.Callback):
    """Stops training before an epoch that would not finish within the budget."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.started = time.monotonic()
        self.epochs_run = 0
        self.stopped_early = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs_run = epoch + 1
        elapsed = time.monotonic() - self.started
        if elapsed / self.epochs_run * (self.epochs_run + 1) > self.seconds:
            self.stopped_early = True
            self.model.stop_training = True
            log(f"time budget: stopping after epoch {self.epochs_run} ({elapsed / 60:.1f} min)")


def training_record(
    args: argparse.Namespace,
    data: PreparedData,
    budget: TimeBudget,
    wall_seconds: float,
    script: str,
    argv: list[str],
) -> dict[str, Any]:
    """The manifest's `training` section: data, split, config, command and wall time."""
    config = {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
    }
    return {
        "data": {
            "name": "UTKFace (aligned & cropped faces)",
            "folder": args.data.name,
            "files": data.report.files,
            "unparseable": len(data.report.unparseable),
            "duplicates_dropped": data.report.duplicates_dropped,
            "conflicting_duplicate_groups_dropped": data.report.conflicting_groups_dropped,
            "checksum": data.checksum,
        },
        "split": {
            "seed": args.seed,
            "stratified_by": "age bucket x gender",
            "fractions": SPLIT_FRACTIONS,
            "sizes": {name: len(arrays.names) for name, arrays in data.splits.items()},
            "checksums": data.split_checksums,
        },
        "config": config,
        "command": f"python -m {script} " + " ".join(shlex.quote(arg) for arg in argv),
        "epochs_run": budget.epochs_run,
        "stopped_by_time_budget": budget.stopped_early,
        "wall_time_minutes": round(wall_seconds / 60, 1),
        "threads": tf.config.threading.get_intra_op_parallelism_threads() or "all",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def fit(
    model: keras.Model,
    args: argparse.Namespace,
    train_set: tf.data.Dataset,
    validation_set: tf.data.Dataset,
) -> TimeBudget:
    """Train for `args.epochs` or until the time budget runs out; the budget says which."""
    budget = TimeBudget(args.max_minutes)
    model.fit(
        train_set,
        validation_data=validation_set,
        epochs=args.epochs,
        callbacks=[budget],
        verbose=2,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    return budget


def predict_outputs(model: keras.Model, arrays: ArraySet) -> dict[str, np.ndarray]:
    """Every output of `model` for a split, as numpy arrays."""
    outputs = model.predict(arrays.images.astype(np.float32), batch_size=256, verbose=0)
    return {name: np.asarray(values) for name, values in outputs.items()}


def validation_report(
    model: keras.Model, calibration: ArraySet, validation: ArraySet
) -> tuple[dict[str, Any], Tempering]:
    """Fit the age head's tempering on the calibration split; the model's validation figures.

    Returns the report (`evaluation_report` plus the calibration split's coverage and the mean
    interval width) and the tempering.
    """
    tempering, calibration_coverage = calibrate(
        predict_outputs(model, calibration)["age_logits"], calibration.ages
    )
    estimates = estimates_of(predict_outputs(model, validation), tempering)
    report = evaluation_report(labels_of(validation), estimates)
    report["calibration_split_coverage"] = round(calibration_coverage, 4)
    if estimates.age_interval is not None:
        widths = estimates.age_interval[:, 1] - estimates.age_interval[:, 0]
        report["mean_interval_width_years"] = round(float(np.mean(widths)), 2)
    return report, tempering


def trained_fields(
    args: argparse.Namespace,
    model: keras.Model,
    tempering: Tempering,
    report: dict[str, Any],
    training: dict[str, Any],
) -> dict[str, Any]:
    """The manifest fields both scripts fill alike: all but `name`, `task` and `outputs`."""
    return {
        "version": args.version,
        "input": {"height": args.size, "width": args.size},
        "calibration": calibration_record(tempering),
        "flops_per_face": count_flops(model),
        "training": training,
        "metrics": {"validation": report},
    }


def calibration_record(tempering: Tempering) -> dict[str, Any]:
    """The manifest's `calibration`: the age head's tempering and the interval it serves."""
    return {
        "temperature": round(tempering.temperature, 4),
        "age_exponent": tempering.age_exponent,
        "interval_level": INTERVAL_LEVEL,
        "fitted_on": "calibration split",
    }


def labels_of(arrays: ArraySet) -> Labels:
    """A split's labels in the form `evaluation_report` takes."""
    return Labels(gender=arrays.genders, age=arrays.ages.astype(np.float64), race=arrays.races)


def estimates_of(outputs: dict[str, np.ndarray], tempering: Tempering) -> Estimates:
    """One model's answers: gender from its gender head, age and interval from its age logits,
    and the bucket from its bucket head where it has one, else the bucket of the estimated age.
    """
    years, interval = age_summary(
        outputs["age_logits"], tempering.temperature, INTERVAL_LEVEL, tempering.age_exponent
    )
    if "age_bucket" in outputs:
        bucket = np.argmax(outputs["age_bucket"], axis=1)
    else:
        bucket = buckets_of(years.astype(np.float64))
    return Estimates(
        gender=np.argmax(outputs["gender"], axis=1),
        bucket=bucket,
        age_years=years,
        age_interval=interval,
    )


def log(message: str) -> None:
    """Progress on stdout, flushed so `nohup ... > log` shows it live."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
