"""From a regressor's logits over integer ages to an age estimate and a central interval.

Pure numpy, shared by the registry (serving) and the training script (calibration), so the
interval a client sees is computed exactly as it was calibrated.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, in float64 for stable tails."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    weights = np.exp(scaled)
    return weights / weights.sum(axis=-1, keepdims=True)


def quantiles(probabilities: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of distributions over ages 0..A-1, shape (n, len(levels)).

    Each integer age a is read as a uniform mass over [a - 0.5, a + 0.5], so the CDF is piecewise
    linear and a quantile interpolates within an age's year: all mass on 30 gives 29.5..30.5.
    """
    cdf = np.cumsum(probabilities, axis=-1)
    ages = probabilities.shape[-1]
    edges = np.arange(ages, dtype=np.float64) + 0.5  # cdf[a] is reached at a + 0.5
    result = np.empty((probabilities.shape[0], len(levels)), dtype=np.float64)
    for row in range(probabilities.shape[0]):
        padded_cdf = np.concatenate(([0.0], cdf[row]))
        padded_edges = np.concatenate(([-0.5], edges))
        result[row] = np.interp(levels, padded_cdf, padded_edges)
    return result


def summarise_age_logits(
    logits: np.ndarray, temperature: float, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected age (n,) and the central `level` interval (n, 2), float32, within 0..A-1."""
    probabilities = softmax(logits, temperature)
    ages = np.arange(probabilities.shape[-1], dtype=np.float64)
    years = probabilities @ ages
    tail = (1.0 - level) / 2.0
    interval = quantiles(probabilities, np.array([tail, 1.0 - tail]))
    return years.astype(np.float32), np.clip(interval, 0.0, probabilities.shape[-1] - 1).astype(np.float32)


def fit_temperature(
    logits: np.ndarray, true_ages: np.ndarray, level: float, tolerance: float = 1e-3
) -> float:
    """The temperature whose `level` interval covers `true_ages` at rate `level` (bisection).

    Coverage grows with temperature (a flatter distribution gives wider intervals), so the
    search is over log-temperature between 0.05 and 20.
    """
    low, high = np.log(0.05), np.log(20.0)
    for _ in range(40):
        middle = (low + high) / 2
        _, interval = summarise_age_logits(logits, float(np.exp(middle)), level)
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
