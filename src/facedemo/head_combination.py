"""The models' heads -> one age, interval, bucket and gender answer a face.

The registry runs the models and hands their raw outputs here; this module alone decides how
they combine, in pure numpy (no TensorFlow), so that the arithmetic can be read and tested on
its own. Every bundle declares its heads in its manifest; the required ones are the
classifier's `age_bucket` and `gender` and the regressor's `age_logits`:
- age: every `age_logits` head, divided by the temperature fitted for it (which may grow with
  the age the head gives a face: `age_distribution.head_temperatures`), pooled into one
  distribution (`age_distribution.pooled`), whose mean is the age and whose central quantiles
  are the interval;
- gender: the mean of every `gender` head;
- age bucket: a weighted mean of the classifier's `age_bucket` head and the age distribution's
  mass per bucket (`BUCKET_HEAD_WEIGHT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from facedemo.age_distribution import (
    Tempering,
    bucket_mass,
    distribution_summary,
    head_temperatures,
    pooled,
)
from facedemo.errors import BundleError
from facedemo.manifest import CLASSIFIER_NAME, Manifest

__all__ = ["BUCKET_HEAD_WEIGHT", "FacePredictions", "HeadCombination", "HeadOutputs"]

# Share of the classifier's bucket head in the bucket answer; the rest is the age distribution's
# mass per bucket. A quarter scores as well as none on the calibration split and keeps the bucket
# head's better recall of the rare 75-99 bucket, for which it was trained with larger loss weights
# (figures: docs/models.md, "Bucket decisions").
BUCKET_HEAD_WEIGHT = 0.25

# Each model's outputs for a batch of faces: model name -> head name -> (n, units) float32.
HeadOutputs = Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class FacePredictions:
    """Both models' answers for a batch of face crops, one row per crop."""

    bucket_probabilities: np.ndarray  # (n, 5) float32: bucket head and age distribution
    gender_probabilities: np.ndarray  # (n, 2) float32, [male, female], gender heads averaged
    age_years: np.ndarray  # (n,) float32, expected age of the pooled distribution
    age_interval: np.ndarray  # (n, 2) float32, [low, high]
    interval_level: float  # probability mass of the central interval, e.g. 0.8
    age_distribution: np.ndarray  # (n, A) float32, the pooled distribution over ages 0..A-1


@dataclass(frozen=True)
class HeadCombination:
    """Which heads make the answer, and how each age head is tempered."""

    age_heads: tuple[tuple[str, Tempering], ...]  # (model name, its age head's tempering)
    gender_heads: tuple[str, ...]  # models with a gender head
    interval_level: float  # the central interval's probability, shared by every age head
    bucket_head: str = CLASSIFIER_NAME  # the model whose age_bucket head is weighed in

    @classmethod
    def from_manifests(cls, manifests: Mapping[str, Manifest]) -> HeadCombination:
        """The combination of the heads `manifests` (by model name) declare; BundleError if the
        age heads lack a calibration or disagree on the interval level or the age range."""
        age_heads, levels, ages = [], set(), set()
        for name, manifest in manifests.items():
            if "age_logits" not in manifest.outputs:
                continue
            if manifest.calibration is None:
                where = f"{manifest.name} {manifest.version}"
                raise BundleError(f"{where} has an age_logits head but no calibration")
            calibration = manifest.calibration
            age_heads.append((name, Tempering(calibration.temperature, calibration.age_exponent)))
            levels.add(calibration.interval_level)
            ages.add(len(manifest.outputs["age_logits"].labels))
        if len(levels) != 1 or len(ages) != 1:
            raise BundleError(
                "the models' age heads must share one interval level and one age range; "
                f"got levels {sorted(levels)} and {sorted(ages)} ages"
            )
        gender_heads = [
            name for name, manifest in manifests.items() if "gender" in manifest.outputs
        ]
        return cls(tuple(age_heads), tuple(gender_heads), levels.pop())

    def combine(self, outputs: HeadOutputs) -> FacePredictions:
        """One answer a face from every model's `outputs` for the same faces."""
        heads: list[tuple[np.ndarray, float | np.ndarray]] = []
        for name, tempering in self.age_heads:
            logits = outputs[name]["age_logits"]
            heads.append((logits, head_temperatures(logits, *tempering)))
        ages = pooled(heads)
        years, interval = distribution_summary(ages, self.interval_level)
        genders = np.mean([outputs[name]["gender"] for name in self.gender_heads], axis=0)
        buckets = BUCKET_HEAD_WEIGHT * outputs[self.bucket_head]["age_bucket"] + (
            1 - BUCKET_HEAD_WEIGHT
        ) * bucket_mass(ages)
        return FacePredictions(
            bucket_probabilities=buckets.astype(np.float32),
            gender_probabilities=genders.astype(np.float32),
            age_years=years,
            age_interval=interval,
            interval_level=self.interval_level,
            age_distribution=ages.astype(np.float32),
        )
