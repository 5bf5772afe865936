"""Age checks' thresholds (age_thresholds.py) and error rates (age_checks.py), on cases worked
out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facedemo.age_checks import (
    age_bands,
    age_check_figures,
    brier_score,
    challenge_threshold,
    expected_calibration_error,
)
from facedemo.age_thresholds import MAX_THRESHOLDS, thresholds_from


def test_thresholds_are_distinct_and_rising() -> None:
    assert thresholds_from([21, 13, 18, 13]) == (13, 18, 21)
    assert thresholds_from([]) == ()


@pytest.mark.parametrize(
    ("values", "message"),
    [([0], "from 1 to 120"), ([18, 121], "from 1 to 120"), (range(1, 10), "at most 8")],
)
def test_thresholds_out_of_bounds_are_refused(values: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        thresholds_from(values)
    assert MAX_THRESHOLDS == 8


def test_a_calibrated_forecast_has_no_calibration_error() -> None:
    # In the 0.2 bin a fifth of the faces are over T, in the 0.9 bin nine tenths.
    probabilities = np.array([0.2] * 10 + [0.9] * 10)
    outcomes = np.array([1, 1] + [0] * 8 + [1] * 9 + [0])
    assert expected_calibration_error(probabilities, outcomes) == pytest.approx(0.0)
    # Brier: 10 x (2 x 0.64 + 8 x 0.04) / 10 ... over 20 faces.
    expected = (2 * 0.8**2 + 8 * 0.2**2 + 9 * 0.1**2 + 0.9**2) / 20
    assert brier_score(probabilities, outcomes) == pytest.approx(expected)


def test_an_overconfident_forecast_has_its_gap_as_error() -> None:
    probabilities = np.array([0.95] * 10)
    outcomes = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(probabilities, outcomes) == pytest.approx(0.25)


def test_the_challenge_threshold_passes_at_most_one_minor_in_a_hundred() -> None:
    # 200 minors with P = 0.000, 0.005, ..., 0.995: at most 2 may pass, so p lies just above
    # the third highest (0.985); adults with P 0.5 .. 1.0 below that are refused.
    minors = np.arange(200) / 200
    adults = np.linspace(0.5, 1.0, 101)
    probabilities = np.concatenate([minors, adults])
    over = np.concatenate([np.zeros(200, bool), np.ones(101, bool)])

    p, refused = challenge_threshold(probabilities, over)

    assert p == pytest.approx(0.985) and p > 0.985
    assert np.sum(minors >= p) == 2
    assert refused == pytest.approx(np.mean(adults < p))
    assert challenge_threshold(adults, np.ones(101, bool)) == (0.0, 0.0)


def test_figures_for_one_threshold_with_groups() -> None:
    ages = np.array([10, 15, 17, 18, 25, 40], dtype=np.float64)
    probabilities = np.array([0.1, 0.6, 0.4, 0.7, 0.3, 0.99])

    figures = age_check_figures(probabilities, ages, 18, age_bands(ages, (0, 18, 30)))

    assert (figures["n_under"], figures["n_over"]) == (3, 3)
    assert figures["minors_passed"] == 0.3333  # the 15-year-old at 0.6 (shares to 4 digits)
    assert figures["adults_refused"] == 0.3333  # the 25-year-old at 0.3
    assert set(figures["groups"]) == {"0-17", "18-29", "30+"}
    assert figures["groups"]["30+"] == {
        "n_under": 0,
        "n_over": 1,
        "minors_passed": None,
        "adults_refused": 0.0,
        "minors_passed_at_challenge": None,
        "adults_refused_at_challenge": 0.0,
    }
    low, high = figures["challenge"]["p_interval"]
    assert 0.0 <= low <= high <= 1.0
    assert sum(row["n"] for row in figures["reliability"]) == 6
