"""Accuracy figures over a labelled set: shared by the training scripts and `facedemo evaluate`.

Labels may be partial: an unknown gender is -1, an unknown age is NaN, an unknown race is -1.
A metric with no labelled rows is None (JSON null), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facedemo.manifest import AGE_BUCKET_LABELS, GENDER_LABELS, age_bucket

RACE_LABELS = ("white", "black", "asian", "indian", "others")


@dataclass(frozen=True)
class Labels:
    """Ground truth, one row per face: gender (0 male, 1 female, -1 unknown), age (NaN unknown)."""

    gender: np.ndarray
    age: np.ndarray
    race: np.ndarray  # -1 unknown


@dataclass(frozen=True)
class Estimates:
    """What the models said, one row per face; any field may be None if a model was not run."""

    gender: np.ndarray | None = None  # (n,) 0/1
    bucket: np.ndarray | None = None  # (n,) 0..4
    age_years: np.ndarray | None = None  # (n,)
    age_interval: np.ndarray | None = None  # (n, 2)


def buckets_of(ages: np.ndarray) -> np.ndarray:
    """Bucket index of each known age; -1 where the age is NaN."""
    return np.array([-1 if np.isnan(age) else age_bucket(age) for age in ages], dtype=np.int64)


def _mean_or_none(values: np.ndarray) -> float | None:
    return None if values.size == 0 else round(float(np.mean(values)), 4)


def core_metrics(labels: Labels, estimates: Estimates) -> dict[str, Any]:
    """n, gender_accuracy, age_bucket_accuracy, age_mae and age_interval_coverage."""
    known_gender = labels.gender >= 0
    known_age = ~np.isnan(labels.age)
    result: dict[str, Any] = {"n": int(labels.gender.shape[0])}
    result["gender_accuracy"] = (
        None
        if estimates.gender is None
        else _mean_or_none(estimates.gender[known_gender] == labels.gender[known_gender])
    )
    true_buckets = buckets_of(labels.age)
    result["age_bucket_accuracy"] = (
        None
        if estimates.bucket is None
        else _mean_or_none(estimates.bucket[known_age] == true_buckets[known_age])
    )
    if estimates.age_years is None:
        result["age_mae"] = None
    else:
        result["age_mae"] = _mean_or_none(np.abs(estimates.age_years - labels.age)[known_age])
    if estimates.age_interval is None:
        result["age_interval_coverage"] = None
    else:
        interval = estimates.age_interval[known_age]
        truth = labels.age[known_age]
        result["age_interval_coverage"] = _mean_or_none(
            (truth >= interval[:, 0]) & (truth <= interval[:, 1])
        )
    return result


def bucket_confusion(labels: Labels, estimates: Estimates) -> list[list[int]] | None:
    """Rows: true bucket, columns: predicted bucket; None without age labels or bucket estimates."""
    known_age = ~np.isnan(labels.age)
    if estimates.bucket is None or not known_age.any():
        return None
    size = len(AGE_BUCKET_LABELS)
    matrix = np.zeros((size, size), dtype=np.int64)
    np.add.at(matrix, (buckets_of(labels.age[known_age]), estimates.bucket[known_age]), 1)
    return matrix.tolist()


def _subset(labels: Labels, estimates: Estimates, rows: np.ndarray) -> tuple[Labels, Estimates]:
    def pick(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[rows]

    return (
        Labels(gender=labels.gender[rows], age=labels.age[rows], race=labels.race[rows]),
        Estimates(
            gender=pick(estimates.gender),
            bucket=pick(estimates.bucket),
            age_years=pick(estimates.age_years),
            age_interval=pick(estimates.age_interval),
        ),
    )


def evaluation_report(labels: Labels, estimates: Estimates) -> dict[str, Any]:
    """Overall figures, the bucket confusion matrix and per-group figures (gender, bucket, race)."""
    report = core_metrics(labels, estimates)
    report["bucket_labels"] = list(AGE_BUCKET_LABELS)
    report["age_bucket_confusion"] = bucket_confusion(labels, estimates)
    groupings = {
        "gender": (labels.gender, GENDER_LABELS),
        "age_bucket": (buckets_of(labels.age), AGE_BUCKET_LABELS),
        "race": (labels.race, RACE_LABELS),
    }
    groups: dict[str, dict[str, Any]] = {}
    for grouping, (values, names) in groupings.items():
        per_group = {
            name: core_metrics(*_subset(labels, estimates, values == index))
            for index, name in enumerate(names)
            if np.any(values == index)
        }
        if per_group:
            groups[grouping] = per_group
    report["groups"] = groups
    return report
