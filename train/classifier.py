"""Train the age-gender-classifier (5 age buckets + gender) on UTKFace and write its bundle.

Commands (from the repository root, with the project installed: `make install`):

    # the committed bundle models/age-gender-classifier/1.0.0:
    .venv/bin/python -m train.classifier --data ../shared/data/utkface --version 1.0.0
    # a two-minute smoke run into a scratch folder:
    .venv/bin/python -m train.classifier --epochs 1 --limit 512 --models-dir /tmp/models

Decoded 64x64 images are cached in .cache/ (first run: about a minute to decode).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import keras
import numpy as np

from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, GENDER_LABELS
from facedemo.metrics import Estimates, Labels, buckets_of, evaluation_report
from train import model_card
from train.architectures import classifier_model, count_flops
from train.augment import make_dataset
from train.bundle import write_bundle
from train.common import (
    TimeBudget,
    base_parser,
    bucket_weights,
    cosine_schedule,
    log,
    prepare,
    training_record,
)
from train.utkface import ArraySet

BUCKET_WEIGHT_POWER = 0.5  # inverse-sqrt bucket frequency: rare old-age buckets count more
LABEL_SMOOTHING = 0.05


def targets(arrays: ArraySet) -> dict[str, np.ndarray]:
    return {
        "age_bucket": buckets_of(arrays.ages.astype(np.float64)).astype(np.int32),
        "gender": arrays.genders,
    }


def estimates(model: keras.Model, arrays: ArraySet) -> Estimates:
    outputs = model.predict(arrays.images.astype(np.float32), batch_size=256, verbose=0)
    return Estimates(
        gender=np.argmax(outputs["gender"], axis=1), bucket=np.argmax(outputs["age_bucket"], axis=1)
    )


def labels(arrays: ArraySet) -> Labels:
    return Labels(gender=arrays.genders, age=arrays.ages.astype(np.float64), race=arrays.races)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "", default_epochs=24)
    args: argparse.Namespace = parser.parse_args(argv)
    started = time.monotonic()
    data = prepare(args)
    train, validation = data.splits["train"], data.splits["validation"]

    model = classifier_model(args.size, args.width, args.dropout)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            cosine_schedule(args, len(train.names)), args.weight_decay
        ),
        loss={
            "age_bucket": keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
            "gender": keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
        },
        metrics={"age_bucket": ["accuracy"], "gender": ["accuracy"]},
    )
    log(f"model: {model.count_params()} parameters, {count_flops(model) / 1e6:.1f} MFLOPs per face")

    def one_hot(arrays: ArraySet) -> dict[str, np.ndarray]:
        return {
            "age_bucket": np.eye(len(AGE_BUCKET_LABELS), dtype=np.float32)[
                targets(arrays)["age_bucket"]
            ],
            "gender": np.eye(len(GENDER_LABELS), dtype=np.float32)[arrays.genders],
        }

    weights = bucket_weights(train.ages, BUCKET_WEIGHT_POWER)
    train_set = make_dataset(
        train.images,
        one_hot(train),
        batch_size=args.batch_size,
        training=True,
        seed=args.seed,
        sample_weights={"age_bucket": weights, "gender": np.ones_like(weights)},
    )
    validation_set = make_dataset(
        validation.images, one_hot(validation), batch_size=256, training=False, seed=args.seed
    )
    budget = TimeBudget(args.max_minutes)
    model.fit(
        train_set, validation_data=validation_set, epochs=args.epochs, callbacks=[budget], verbose=2
    )

    report = evaluation_report(labels(validation), estimates(model, validation))
    log(
        f"validation: gender {report['gender_accuracy']}, bucket {report['age_bucket_accuracy']} "
        f"(n={report['n']})"
    )
    manifest_fields: dict[str, Any] = {
        "name": CLASSIFIER_NAME,
        "version": args.version,
        "task": "age-gender-classification",
        "input": {"height": args.size, "width": args.size},
        "outputs": {
            "age_bucket": {"kind": "probabilities", "labels": list(AGE_BUCKET_LABELS)},
            "gender": {"kind": "probabilities", "labels": list(GENDER_LABELS)},
        },
        "flops_per_face": count_flops(model),
        "training": training_record(
            args, data, budget, time.monotonic() - started, "train.classifier"
        ),
        "metrics": {"validation": report},
    }
    card = model_card.render(
        title="age-gender-classifier",
        summary=(
            "A separable CNN that gives, for one aligned face crop, probabilities of five age "
            "buckets (0-24, 25-49, 50-74, 75-99, 100-124) and of the two gender labels."
        ),
        manifest_fields=manifest_fields,
        report=report,
        columns=["gender_accuracy", "age_bucket_accuracy"],
        weaknesses=[
            "Bucket boundaries are hard edges on noisy labels: faces near 25, 50 or 75 are often "
            "put in the neighbouring bucket (see the confusion matrix in manifest.json).",
            "75-99 and 100-124 are rare in UTKFace (100-124: a few dozen images); their accuracy "
            "is low and its estimate is noisy, despite inverse-sqrt-frequency loss weights.",
            "Gender of babies and young children is close to chance from appearance.",
            "Trained on tightly aligned UTKFace chips at 64x64: other crops, profile views, "
            "occlusion, heavy make-up or low light reduce accuracy.",
        ],
    )
    bundle = write_bundle(args.models_dir, model, manifest_fields, card)
    log(f"wrote {bundle}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
