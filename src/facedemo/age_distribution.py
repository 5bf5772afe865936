"""From logits over integer ages to an age estimate, a central interval and bucket mass.

Pure numpy, shared by the registry (serving) and the training scripts (calibration), so the
interval a client sees is computed exactly as it was calibrated. Each model's age head has its
own temperature, which may grow with the age the head sees (`head_temperatures`); the registry
pools the tempered heads into one distribution (`pooled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from facedemo.manifest import AGE_BUCKET_LABELS, age_bucket

REFERENCE_AGE = 25.0  # a head's temperature is its base temperature for a face it sees as 25
AGE_EXPONENTS = tuple(step / 10 for step in range(11))  # what `fit_tempering` chooses from
COVERAGE_BANDS = (25, 50)  # edges of the predicted-age bands whose coverage it evens out


class Tempering(NamedTuple):
    """How one age head is tempered (`head_temperatures`), as a bundle's manifest records it."""

    temperature: float
    age_exponent: float


def softmax(logits: np.ndarray, temperature: float | np.ndarray = 1.0) -> np.ndarray:
    """Row-wise softmax of `logits / temperature` (a number, or one per row, shape (n, 1)), in
    float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def cdf_quantiles(probabilities: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles (n, len(levels)) of distributions over integer ages 0..A-1, one per row.

    Convention: age a owns the interval [a - 0.5, a + 0.5] and its mass is spread evenly over
    it, so the CDF is piecewise linear through (a + 0.5, P(age <= a)). A point mass on 30 has
    median 30 and 80% interval [29.6, 30.4]. Results are clipped to [0, A - 1].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    ages = probabilities.shape[-1]
    cdf = np.cumsum(probabilities, axis=-1)
    # Index of the first age whose cumulative mass reaches each level: (n, q).
    index = (cdf[:, None, :] < levels[None, :, None]).sum(axis=-1).clip(max=ages - 1)
    below = np.where(index > 0, np.take_along_axis(cdf, (index - 1).clip(min=0), axis=-1), 0.0)
    mass = np.take_along_axis(probabilities, index, axis=-1)
    fraction = np.divide(
        levels[None, :] - below, mass, out=np.full_like(below, 0.5), where=mass > 0
    )
    return np.clip(index - 0.5 + fraction.clip(0.0, 1.0), 0.0, ages - 1)


def expected_age(probabilities: np.ndarray) -> np.ndarray:
    """Mean age (n,) of distributions (n, A) over integer ages 0..A-1, in float64."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities @ np.arange(probabilities.shape[-1], dtype=np.float64)


def head_temperatures(
    logits: np.ndarray, temperature: float, age_exponent: float = 0.0
) -> np.ndarray:
    """One temperature per face (n, 1): `temperature` x ((1 + a) / 26) ** `age_exponent`, where a
    is the age the head gives the face at `temperature`.

    An exponent of 0 tempers every face alike. Above 0, a face that looks older gets a flatter
    distribution and so a wider interval: UTKFace's older labels are guessed less precisely, and
    one temperature for all ages left the interval too wide for children and too narrow for the
    old (see `fit_tempering`).
    """
    temperatures = np.full((len(logits), 1), float(temperature))
    if age_exponent == 0.0:
        return temperatures
    seen_age = expected_age(softmax(logits, temperature))[:, None]
    return temperatures * ((1.0 + seen_age) / (1.0 + REFERENCE_AGE)) ** age_exponent


def pooled(heads: list[tuple[np.ndarray, float | np.ndarray]]) -> np.ndarray:
    """One distribution (n, A) from (logits, temperature) heads: softmax of the mean of
    logits / temperature, i.e. the normalised geometric mean of the tempered distributions.
    A temperature is a number or one per face (`head_temperatures`). The geometric mean keeps
    the interval near its level where the arithmetic mean widens it (docs/models.md, "How the
    heads combine").
    """
    if not heads:
        raise ValueError("pooling needs at least one (logits, temperature) head")
    scaled = [np.asarray(logits, dtype=np.float64) / temperature for logits, temperature in heads]
    return softmax(np.mean(scaled, axis=0))


def distribution_summary(probabilities: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected age (n,) and central `level` interval (n, 2) of distributions (n, A), as float32.

    years = sum(p * age); the interval is the (1 - level) / 2 and (1 + level) / 2 quantiles of p
    (see `cdf_quantiles`).
    """
    years = expected_age(probabilities)
    tail = (1.0 - level) / 2.0
    interval = cdf_quantiles(probabilities, np.array([tail, 1.0 - tail]))
    return years.astype(np.float32), interval.astype(np.float32)


def age_summary(
    logits: np.ndarray, temperature: float, level: float, age_exponent: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """`distribution_summary` of one head: p = softmax(logits / `head_temperatures`)."""
    return distribution_summary(
        softmax(logits, head_temperatures(logits, temperature, age_exponent)), level
    )


def bucket_mass(probabilities: np.ndarray) -> np.ndarray:
    """Probability of each age bucket (n, 5): the distribution's mass over the bucket's ages."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    buckets = [age_bucket(age) for age in range(probabilities.shape[-1])]
    mass = np.zeros((probabilities.shape[0], len(AGE_BUCKET_LABELS)), dtype=np.float64)
    np.add.at(mass.T, buckets, probabilities.T)
    return mass.astype(np.float32)


def probability_over(probabilities: np.ndarray, thresholds: Sequence[int]) -> np.ndarray:
    """P(age >= T) (n, len(thresholds)) of distributions (n, A) over integer ages 0..A-1: the
    mass of the ages T and above, for whole-year ages as UTKFace labels them (0 for T >= A, 1 for
    T <= 0). It falls as T rises."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    ages = probabilities.shape[-1]
    # above[:, k] is the mass of ages k..A-1; above[:, A] is 0.
    above = np.concatenate(
        [np.cumsum(probabilities[:, ::-1], axis=-1)[:, ::-1], np.zeros((len(probabilities), 1))],
        axis=-1,
    )
    columns = np.clip(np.asarray(thresholds, dtype=np.int64), 0, ages)
    return np.clip(above[:, columns], 0.0, 1.0)


def fit_tempering(logits: np.ndarray, true_ages: np.ndarray, level: float) -> Tempering:
    """The tempering of one head (see `head_temperatures`): for each exponent of
    `AGE_EXPONENTS` the temperature that covers `true_ages` at rate `level` overall, then the
    exponent whose coverage in the bands of predicted age (`COVERAGE_BANDS`) is nearest `level`
    on average (squared), the smallest of equals.
    """
    candidates = []
    for age_exponent in AGE_EXPONENTS:
        temperature = fit_temperature(logits, true_ages, level, age_exponent)
        _, interval = age_summary(logits, temperature, level, age_exponent)
        inside = (true_ages >= interval[:, 0]) & (true_ages <= interval[:, 1])
        band = np.digitize(expected_age(softmax(logits, temperature)), COVERAGE_BANDS)
        spread = np.mean([(inside[band == b].mean() - level) ** 2 for b in np.unique(band)])
        candidates.append((float(spread), age_exponent, temperature))
    _, age_exponent, temperature = min(candidates)
    return Tempering(temperature, age_exponent)


def fit_temperature(
    logits: np.ndarray,
    true_ages: np.ndarray,
    level: float,
    age_exponent: float = 0.0,
    tolerance: float = 1e-3,
) -> float:
    """The temperature whose `level` interval (with `age_exponent`, see `head_temperatures`)
    covers `true_ages` at rate `level` (bisection).

    Coverage grows with temperature (a flatter distribution gives wider intervals), so the
    search is over log-temperature between 0.05 and 20.
    """
    low, high = np.log(0.05), np.log(20.0)
    for _ in range(40):
        middle = (low + high) / 2
        _, interval = age_summary(logits, float(np.exp(middle)), level, age_exponent)
        coverage = interval_coverage(interval, true_ages)
        if abs(coverage - level) < tolerance:
            break
        if coverage < level:
            low = middle
        else:
            high = middle
    return float(np.exp((low + high) / 2))


def interval_coverage(interval: np.ndarray, true_ages: np.ndarray) -> float:
    """Share of true ages inside their closed interval."""
    inside = (true_ages >= interval[:, 0]) & (true_ages <= interval[:, 1])
    return float(np.mean(inside))
