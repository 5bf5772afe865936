"""The age distribution's arithmetic: quantiles, intervals, tempering by one temperature,
bucket mass and pooling; pure numpy, against figures worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facedemo.age_distribution import (
    age_summary,
    bucket_mass,
    cdf_quantiles,
    pooled,
    probability_over,
    softmax,
)

AGES = 101


def one_hot_logits(ages: int, *hot: int) -> np.ndarray:
    logits = np.full((len(hot), ages), -1000.0)
    logits[np.arange(len(hot)), hot] = 0.0
    return logits


def test_point_mass_gives_its_age_and_a_unit_wide_interval() -> None:
    # Each age a owns [a - 0.5, a + 0.5], so the 80% interval of a point mass is its middle 80%.
    years, interval = age_summary(one_hot_logits(AGES, 30), temperature=1.0, level=0.8)
    np.testing.assert_allclose(years, [30.0])
    np.testing.assert_allclose(interval, [[29.6, 30.4]], atol=1e-5)


def test_interval_is_clipped_to_the_age_range() -> None:
    years, interval = age_summary(one_hot_logits(AGES, 0, 100), temperature=1.0, level=0.8)
    np.testing.assert_allclose(years, [0.0, 100.0])
    np.testing.assert_allclose(interval, [[0.0, 0.4], [99.6, 100.0]], atol=1e-5)


def test_uniform_distribution_quantiles() -> None:
    # Uniform over 0..9 is uniform over [-0.5, 9.5]: the q-quantile is -0.5 + 10 q.
    years, interval = age_summary(np.zeros((1, 10)), temperature=1.0, level=0.8)
    np.testing.assert_allclose(years, [4.5], atol=1e-6)
    np.testing.assert_allclose(interval, [[0.5, 8.5]], atol=1e-5)


def test_two_point_distribution() -> None:
    logits = np.full((1, 50), -1000.0)
    logits[0, [20, 40]] = 0.0
    years, interval = age_summary(logits, temperature=1.0, level=0.8)
    np.testing.assert_allclose(years, [30.0], atol=1e-5)
    # 10% of the mass: a fifth of the way into age 20's bin; 90%: four fifths into age 40's.
    np.testing.assert_allclose(interval, [[19.7, 40.3]], atol=1e-5)


def test_temperature_divides_the_logits() -> None:
    logits = np.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(softmax(logits), [[0.25, 0.75]])
    np.testing.assert_allclose(softmax(2.0 * logits, temperature=2.0), [[0.25, 0.75]])
    hot, _ = age_summary(logits, temperature=1.0, level=0.8)
    cooled, _ = age_summary(logits, temperature=1e6, level=0.8)
    np.testing.assert_allclose(hot, [0.75], atol=1e-6)
    np.testing.assert_allclose(cooled, [0.5], atol=1e-5)  # a huge temperature flattens p


def test_quantiles_match_a_reference_interpolation() -> None:
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.full(AGES, 0.3), size=20)
    levels = np.array([0.05, 0.1, 0.5, 0.9, 0.95])
    quantiles = cdf_quantiles(probabilities, levels)
    edges = np.arange(-0.5, AGES)  # bin edges -0.5, 0.5, ..., 100.5
    for row, expected_row in zip(probabilities, quantiles, strict=True):
        cdf = np.concatenate([[0.0], np.cumsum(row)])
        reference = np.clip(np.interp(levels, cdf, edges), 0, AGES - 1)
        np.testing.assert_allclose(expected_row, reference, atol=1e-6)


def test_age_summary_of_no_rows() -> None:
    years, interval = age_summary(np.zeros((0, AGES), np.float32), temperature=1.0, level=0.8)
    assert years.shape == (0,) and interval.shape == (0, 2)
    assert years.dtype == np.float32 and interval.dtype == np.float32


def test_bucket_mass_sums_each_buckets_ages() -> None:
    probabilities = np.zeros((1, 117))
    probabilities[0, [10, 30, 110]] = 1 / 3  # a third each on buckets 0-24, 25-49 and 100-124
    np.testing.assert_allclose(bucket_mass(probabilities), [[1 / 3, 1 / 3, 0, 0, 1 / 3]], atol=1e-6)


def test_pooling_is_the_normalised_geometric_mean_of_tempered_heads() -> None:
    first = np.array([[0.0, np.log(4.0)]])  # p = [0.2, 0.8]
    second = np.array([[np.log(4.0), 0.0]])  # p = [0.8, 0.2] at temperature 1
    np.testing.assert_allclose(pooled([(first, 1.0), (second, 1.0)]), [[0.5, 0.5]])
    # Temperature 2 on 2 x logits is the same head: the geometric mean of [0.2, 0.8] twice.
    np.testing.assert_allclose(pooled([(first, 1.0), (2.0 * first, 2.0)]), [[0.2, 0.8]])
    np.testing.assert_allclose(pooled([(first, 1.0)]), softmax(first))
    with pytest.raises(ValueError, match="at least one"):
        pooled([])


def test_probability_over_is_the_mass_of_the_ages_from_t_on() -> None:
    probabilities = np.zeros((2, AGES))
    probabilities[0, [10, 20, 30]] = [0.2, 0.3, 0.5]
    probabilities[1, 17] = 1.0

    over = probability_over(probabilities, [0, 10, 11, 18, 21, 30, 31, AGES, 200])

    np.testing.assert_allclose(over[0], [1.0, 1.0, 0.8, 0.8, 0.5, 0.5, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(over[1], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], atol=1e-12)


def test_probability_over_falls_as_the_threshold_rises() -> None:
    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet(np.full(AGES, 0.5), size=50)

    over = probability_over(probabilities, list(range(0, AGES + 1)))

    assert (np.diff(over, axis=1) <= 1e-12).all()
    np.testing.assert_allclose(over[:, 0], 1.0)
    assert over.shape == (50, AGES + 1)
