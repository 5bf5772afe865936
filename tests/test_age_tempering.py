"""A temperature that grows with the age a head gives: `head_temperatures` and `fit_tempering`."""

from __future__ import annotations

import numpy as np
import pytest

from facedemo.age_distribution import (
    AGE_EXPONENTS,
    Tempering,
    age_summary,
    expected_age,
    fit_temperature,
    fit_tempering,
    head_temperatures,
    softmax,
)

AGES = 117
LEVEL = 0.8


def gaussian_logits(centres: np.ndarray, sigma: float) -> np.ndarray:
    """Logits (n, AGES) whose softmax is a Gaussian of spread `sigma` around each centre."""
    ages = np.arange(AGES, dtype=np.float64)
    return -0.5 * ((ages[None, :] - centres[:, None]) / sigma) ** 2


def test_with_exponent_zero_every_face_gets_the_one_temperature() -> None:
    logits = gaussian_logits(np.array([3.0, 25.0, 80.0]), 4.0)

    np.testing.assert_allclose(head_temperatures(logits, 0.9), [[0.9], [0.9], [0.9]])


def test_the_temperature_grows_as_a_power_of_one_plus_the_age_the_head_gives() -> None:
    logits = gaussian_logits(np.array([25.0, 51.0, 12.0]), 3.0)
    seen = expected_age(softmax(logits, 0.8))

    temperatures = head_temperatures(logits, 0.8, age_exponent=0.5)

    np.testing.assert_allclose(temperatures[:, 0], 0.8 * ((1 + seen) / 26) ** 0.5)
    assert temperatures[1, 0] > temperatures[0, 0] > temperatures[2, 0]
    assert temperatures[0, 0] == pytest.approx(0.8, abs=1e-3)  # seen as 25: the base


def noisier_with_age(exponent: float, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """A head that predicts every face with the same 3-year spread, and true ages whose distance
    from the prediction is 3 x ((1 + age) / 26) ** (`exponent` / 2) years wide: what a head
    tempered with `exponent` would predict (the softmax of these logits / T spreads sqrt(T) x 3).
    """
    rng = np.random.default_rng(7)
    predicted = rng.uniform(2.0, 90.0, n)
    spread = 3.0 * ((1.0 + predicted) / 26.0) ** (exponent / 2)
    true_ages = np.clip(np.round(predicted + rng.normal(0.0, spread)), 0, AGES - 1)
    return gaussian_logits(predicted, 3.0), true_ages


def coverage_by_band(
    logits: np.ndarray, true_ages: np.ndarray, tempering: Tempering
) -> list[float]:
    _, interval = age_summary(logits, tempering.temperature, LEVEL, tempering.age_exponent)
    inside = (true_ages >= interval[:, 0]) & (true_ages <= interval[:, 1])
    band = np.digitize(expected_age(softmax(logits)), (25, 50))
    return [float(inside[band == b].mean()) for b in range(3)]


def test_labels_noisier_with_age_get_a_growing_temperature_that_evens_the_coverage() -> None:
    logits, true_ages = noisier_with_age(0.6)

    tempering = fit_tempering(logits, true_ages, LEVEL)
    one = fit_tempering_at_zero(logits, true_ages)

    assert 0.4 <= tempering.age_exponent <= 0.8
    fitted = coverage_by_band(logits, true_ages, tempering)
    flat = coverage_by_band(logits, true_ages, one)
    assert max(abs(c - LEVEL) for c in fitted) < 0.03
    assert max(abs(c - LEVEL) for c in flat) > 0.06


def test_labels_as_noisy_at_every_age_keep_one_temperature() -> None:
    logits, true_ages = noisier_with_age(0.0)

    tempering = fit_tempering(logits, true_ages, LEVEL)

    assert tempering.age_exponent <= 0.1
    assert tempering.age_exponent in AGE_EXPONENTS


def fit_tempering_at_zero(logits: np.ndarray, true_ages: np.ndarray) -> Tempering:
    return Tempering(fit_temperature(logits, true_ages, LEVEL), 0.0)
