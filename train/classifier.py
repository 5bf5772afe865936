"""Train the age-gender-classifier (5 age buckets + gender) on UTKFace and write its bundle.

Commands (from the repository root, with the project installed: `make install`):

    # the served bundle models/age-gender-classifier/1.4.0 (distilled from the teacher's
    # descriptors, which `python -m train.teacher` computes first, at weight 3; trained side by
    # side with a regressor, one core each; 53 minutes):
    .venv/bin/python -m train.classifier --data ../shared/data/utkface --version 1.4.0 --threads 1 \
        --architecture residual --epochs 28 --max-minutes 82 --distill-weight 3
    # earlier bundles: docs/models.md, "Every pair served so far"
    # a two-minute smoke run into a scratch folder:
    .venv/bin/python -m train.classifier --epochs 1 --limit 512 --models-dir /tmp/models

Decoded images (--size pixels square) are cached in .cache/ (first run: about a minute to decode).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import keras
import numpy as np

from facedemo.accuracy import buckets_of
from facedemo.age_distribution import Tempering
from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, GENDER_LABELS
from train import model_card
from train.age_targets import (
    AGE_LOGITS_SPEC,
    AGES,
    age_distribution_loss,
    expected_age_mae,
)
from train.architectures import ARCHITECTURES, classifier_model
from train.bundle_run import BundleRecipe, train_and_write_bundle
from train.common import (
    base_parser,
    bucket_weights,
    prepare,
)
from train.objectives import Objectives
from train.utkface import ArraySet

BUCKET_WEIGHT_POWER = 0.5  # inverse-sqrt bucket frequency: rare old-age buckets count more
AGE_WEIGHT_POWER = 0.25  # the auxiliary age head: milder, as in the regressor
AGE_LOSS_WEIGHT = 0.25  # the auxiliary head's share of the loss
LABEL_SMOOTHING = 0.05


def targets(arrays: ArraySet) -> dict[str, np.ndarray]:
    """One-hot bucket and gender labels, and the age in years for the auxiliary head."""
    buckets = buckets_of(arrays.ages.astype(np.float64))
    return {
        "age_bucket": np.eye(len(AGE_BUCKET_LABELS), dtype=np.float32)[buckets],
        "gender": np.eye(len(GENDER_LABELS), dtype=np.float32)[arrays.genders],
        "age_logits": arrays.ages.astype(np.float32),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "", default_epochs=24)
    argv = sys.argv[1:] if argv is None else argv
    args: argparse.Namespace = parser.parse_args(argv)
    started = time.monotonic()
    data = prepare(args)
    train = data.splits["train"]
    model = classifier_model(
        args.size, args.width, args.dropout, AGES, args.architecture, args.stem_stride
    )
    bucket_weight = bucket_weights(train.ages, BUCKET_WEIGHT_POWER)
    objectives = Objectives(
        losses={
            "age_bucket": keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
            "gender": keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
            "age_logits": age_distribution_loss(args.age_l1_weight, args.age_sigma_growth),
        },
        loss_weights={"age_bucket": 1.0, "gender": 1.0, "age_logits": AGE_LOSS_WEIGHT},
        metrics={
            "age_bucket": ["accuracy"],
            "gender": ["accuracy"],
            "age_logits": [expected_age_mae],
        },
        train_targets=targets(train),
        train_weights={
            "age_bucket": bucket_weight,
            "gender": np.ones_like(bucket_weight),
            "age_logits": bucket_weights(train.ages, AGE_WEIGHT_POWER),
        },
        validation_targets=targets(data.splits["validation"]),
    )
    return train_and_write_bundle(
        RECIPE, args, argv, data, model, objectives, train=train, started=started
    )


def render_card(args: argparse.Namespace, manifest_fields: dict[str, Any]) -> str:
    """The bundle's MODEL_CARD.md (also rewritten by `python -m train.recalibrate`)."""
    tempering = model_card.tempering_phrase(manifest_fields["calibration"])
    return model_card.render(
        title="age-gender-classifier",
        summary=(
            f"{ARCHITECTURES[args.architecture]} that gives, for one aligned face crop, "
            "probabilities of five age buckets (0-24, 25-49, 50-74, 75-99, 100-124) and of the "
            "two gender labels, plus an "
            "auxiliary distribution over ages 0-116 (trained with a quarter of the loss weight; "
            f"{tempering}). The service "
            "averages its gender head with the age-regressor's and pools its age distribution "
            "with the age-regressor's (see docs/models.md). The figures below are this "
            "model alone: bucket and gender from their heads, age from the auxiliary head."
        ),
        manifest_fields=manifest_fields,
        report=manifest_fields["metrics"]["validation"],
        columns=["gender_accuracy", "age_bucket_accuracy", "age_mae"],
        weaknesses=[
            "Bucket boundaries are hard edges on noisy labels: faces near 25, 50 or 75 are often "
            "put in the neighbouring bucket (see the confusion matrix in manifest.json).",
            "75-99 and 100-124 are rare in UTKFace (100-124: a few dozen images); their accuracy "
            "is low and its estimate is noisy, despite inverse-sqrt-frequency loss weights.",
            "Gender of babies and young children is close to chance from appearance.",
            f"Trained on tightly aligned UTKFace chips at {args.size}x{args.size}: other crops, "
            "profile views, occlusion, heavy make-up or low light reduce accuracy.",
        ],
    )


def _summary(report: dict[str, Any], tempering: Tempering) -> str:
    del tempering  # the auxiliary age head's tempering is in the manifest
    return (
        f"gender {report['gender_accuracy']}, bucket {report['age_bucket_accuracy']}, "
        f"auxiliary age MAE {report['age_mae']}"
    )


RECIPE = BundleRecipe(
    script="train.classifier",
    manifest={
        "name": CLASSIFIER_NAME,
        "task": "age-gender-classification",
        "outputs": {
            "age_bucket": {"kind": "probabilities", "labels": list(AGE_BUCKET_LABELS)},
            "gender": {"kind": "probabilities", "labels": list(GENDER_LABELS)},
            "age_logits": AGE_LOGITS_SPEC.model_dump(),
        },
    },
    summary=_summary,
    render_card=render_card,
)


if __name__ == "__main__":
    raise SystemExit(main())
