"""Train the age-regressor (a distribution over ages 0..116, plus gender) and write its bundle.

Commands (from the repository root, with the project installed: `make install`):

    # the served bundle models/age-regressor/1.7.0 (distilled from the teacher's descriptors,
    # which `python -m train.teacher` computes first, at weight 3; 34 epochs on one core, the
    # first 12 minutes beside the classifier 1.4.0; 44 minutes):
    .venv/bin/python -m train.regressor --data ../shared/data/utkface --version 1.7.0 --threads 1 \
        --architecture residual --epochs 34 --max-minutes 55 --augment 0.5 --dropout 0.1 \
        --zoom-out 0.15 --greyscale 0.1 --low-res 0.1 --distill-weight 3
    # earlier bundles: docs/models.md, "Every pair served so far"
    # a two-minute smoke run into a scratch folder:
    .venv/bin/python -m train.regressor --epochs 1 --limit 512 --models-dir /tmp/models
    # with IMDB-WIKI photos added to the training split (see train/wiki_chips.py):
    .venv/bin/python -m train.regressor --wiki ../wiki_crop/wiki.mat --version 1.8.0

Why a distribution: the model outputs logits over integer ages (see train/age_targets.py for the
loss). The expected age is the estimate; the 10% and 90% quantiles of the distribution are the
80% interval, after a temperature fitted on the calibration split (never the validation split),
which grows with the estimated age as far as that evens out the coverage across ages.
An auxiliary gender head (label-smoothed cross-entropy) shares the backbone; the registry averages
it with the classifier's gender head and pools the age distribution with the classifier's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from facedemo.age_distribution import Tempering
from facedemo.manifest import GENDER_LABELS, REGRESSOR_NAME
from train import model_card
from train.age_targets import (
    AGE_LOGITS_SPEC,
    AGES,
    age_distribution_loss,
    expected_age_mae,
)
from train.architectures import ARCHITECTURES, regressor_model
from train.bundle_run import BundleRecipe, train_and_write_bundle
from train.common import (
    base_parser,
    bucket_weights,
    log,
    prepare,
)
from train.objectives import Objectives
from train.utkface import ArraySet, concatenate
from train.wiki_chips import wiki_training_rows

BUCKET_WEIGHT_POWER = 0.25  # milder than the classifier's: MAE is dominated by common ages
LABEL_SMOOTHING = 0.05


def targets(arrays: ArraySet) -> dict[str, np.ndarray]:
    """The age in years for the distribution head, one-hot gender for the auxiliary head."""
    return {
        "age_logits": arrays.ages.astype(np.float32),
        "gender": np.eye(len(GENDER_LABELS), dtype=np.float32)[arrays.genders],
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "", default_epochs=24)
    parser.add_argument(
        "--wiki",
        type=Path,
        help="wiki.mat or imdb.mat of IMDB-WIKI: its photos join the training split",
    )
    argv = sys.argv[1:] if argv is None else argv
    args: argparse.Namespace = parser.parse_args(argv)
    started = time.monotonic()
    data = prepare(args)
    train = data.splits["train"]
    extra_data = None
    if args.wiki is not None:
        wiki, extra_data = wiki_training_rows(args.wiki, args.size, args.cache_dir)
        train = concatenate(train, wiki)
        log(f"IMDB-WIKI: {extra_data}; training on {len(train.names)} faces")
    model = regressor_model(
        args.size, args.width, args.dropout, AGES, args.architecture, args.stem_stride
    )
    age_weight = bucket_weights(train.ages, BUCKET_WEIGHT_POWER)
    objectives = Objectives(
        losses={
            "age_logits": age_distribution_loss(args.age_l1_weight, args.age_sigma_growth),
            "gender": keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
        },
        loss_weights={"age_logits": 1.0, "gender": 1.0},
        metrics={"age_logits": [expected_age_mae], "gender": ["accuracy"]},
        train_targets=targets(train),
        train_weights={"age_logits": age_weight, "gender": np.ones_like(age_weight)},
        validation_targets=targets(data.splits["validation"]),
    )
    return train_and_write_bundle(
        RECIPE,
        args,
        argv,
        data,
        model,
        objectives,
        train=train,
        started=started,
        extra_record={"extra_training_data": extra_data},
    )


def render_card(args: argparse.Namespace, manifest_fields: dict[str, Any]) -> str:
    """The bundle's MODEL_CARD.md (also rewritten by `python -m train.recalibrate`)."""
    tempering = model_card.tempering_phrase(manifest_fields["calibration"])
    return model_card.render(
        title="age-regressor",
        summary=(
            f"{ARCHITECTURES[args.architecture]} that gives, for one aligned face crop, "
            "a probability distribution over ages 0-116, and an auxiliary gender head. The "
            "service pools this "
            f"distribution (after a {tempering}) with the classifier's auxiliary "
            "one (see docs/models.md) and reports the mean as the age and the 10%-90% "
            "quantiles as an 80% interval. "
            "The figures below are this model alone; the age bucket column is the bucket of its "
            "estimated age."
        ),
        manifest_fields=manifest_fields,
        report=manifest_fields["metrics"]["validation"],
        columns=["age_mae", "age_interval_coverage", "age_bucket_accuracy", "gender_accuracy"],
        weaknesses=[
            "Errors grow with age: labels of older faces are noisier and rarer, so MAE for 50+ is "
            "well above the overall figure. The interval's temperature grows with the age the "
            "model sees as far as that evens out the coverage, but its coverage still differs "
            "between groups (see the table).",
            "Infants and toddlers have small absolute errors but large relative ones.",
            "Few faces over 90 in UTKFace: estimates there shrink towards younger ages.",
            f"Trained on tightly aligned UTKFace chips at {args.size}x{args.size}: other crops or "
            "poses reduce accuracy.",
        ],
    )


def _summary(report: dict[str, Any], tempering: Tempering) -> str:
    return (
        f"MAE {report['age_mae']}, 80% coverage {report['age_interval_coverage']}, "
        f"auxiliary gender {report['gender_accuracy']}, {tempering}"
    )


RECIPE = BundleRecipe(
    script="train.regressor",
    manifest={
        "name": REGRESSOR_NAME,
        "task": "age-regression",
        "outputs": {
            "age_logits": AGE_LOGITS_SPEC.model_dump(),
            "gender": {"kind": "probabilities", "labels": list(GENDER_LABELS)},
        },
    },
    summary=_summary,
    render_card=render_card,
)


if __name__ == "__main__":
    raise SystemExit(main())
