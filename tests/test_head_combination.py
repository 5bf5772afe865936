"""How the models' heads become one answer a face (head_combination.py), without TensorFlow:
synthetic head outputs whose combination is worked out by hand."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from facedemo.age_distribution import (
    Tempering,
    bucket_mass,
    distribution_summary,
    probability_over,
    softmax,
)
from facedemo.head_combination import BUCKET_HEAD_WEIGHT, HeadCombination
from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, REGRESSOR_NAME

AGES = 101
LEVEL = 0.8


def one_hot(units: int, *hot: int) -> np.ndarray:
    """Logits (len(hot), units) whose softmax is a point mass on each `hot` unit."""
    logits = np.full((len(hot), units), -1000.0)
    logits[np.arange(len(hot)), hot] = 0.0
    return logits


def both_heads() -> HeadCombination:
    """Both models' age heads at temperature 1 and both gender heads."""
    return HeadCombination(
        age_heads=((CLASSIFIER_NAME, Tempering(1.0, 0.0)), (REGRESSOR_NAME, Tempering(1.0, 0.0))),
        gender_heads=(CLASSIFIER_NAME, REGRESSOR_NAME),
        interval_level=LEVEL,
    )


def outputs(
    classifier_age: np.ndarray, regressor_age: np.ndarray, rows: int
) -> dict[str, dict[str, np.ndarray]]:
    buckets = np.tile([0.0, 0.0, 1.0, 0.0, 0.0], (rows, 1))  # the bucket head says 50-74
    return {
        CLASSIFIER_NAME: {
            "age_logits": classifier_age,
            "age_bucket": buckets,
            "gender": np.tile([0.9, 0.1], (rows, 1)),
        },
        REGRESSOR_NAME: {"age_logits": regressor_age, "gender": np.tile([0.5, 0.5], (rows, 1))},
    }


def test_two_agreeing_heads_give_their_age_and_the_genders_mean() -> None:
    age = one_hot(AGES, 30)
    combination = both_heads()

    got = combination.combine(outputs(age, age, rows=1))

    np.testing.assert_allclose(got.age_years, [30.0], atol=1e-5)
    np.testing.assert_allclose(got.age_interval, [[29.6, 30.4]], atol=1e-4)
    np.testing.assert_allclose(got.gender_probabilities, [[0.7, 0.3]], atol=1e-6)
    # A quarter the bucket head (50-74), three quarters the distribution's mass (25-49).
    np.testing.assert_allclose(
        got.bucket_probabilities,
        [[0.0, 1 - BUCKET_HEAD_WEIGHT, BUCKET_HEAD_WEIGHT, 0.0, 0.0]],
        atol=1e-6,
    )
    assert got.interval_level == LEVEL
    assert got.bucket_probabilities.dtype == np.float32
    assert got.gender_probabilities.dtype == np.float32


def test_the_age_is_the_geometric_pool_of_the_tempered_heads() -> None:
    rng = np.random.default_rng(0)
    classifier_age, regressor_age = rng.normal(size=(2, 4, AGES))
    combination = HeadCombination(
        age_heads=((CLASSIFIER_NAME, Tempering(2.0, 0.0)), (REGRESSOR_NAME, Tempering(1.0, 0.0))),
        gender_heads=(CLASSIFIER_NAME,),
        interval_level=LEVEL,
    )
    ages = softmax((classifier_age / 2.0 + regressor_age / 1.0) / 2)
    years, interval = distribution_summary(ages, LEVEL)

    got = combination.combine(outputs(classifier_age, regressor_age, rows=4))

    np.testing.assert_allclose(got.age_years, years, atol=1e-5)
    np.testing.assert_allclose(got.age_interval, interval, atol=1e-5)
    np.testing.assert_allclose(got.gender_probabilities, np.tile([0.9, 0.1], (4, 1)), atol=1e-6)
    expected_buckets = BUCKET_HEAD_WEIGHT * np.tile([0, 0, 1, 0, 0], (4, 1)) + (
        1 - BUCKET_HEAD_WEIGHT
    ) * bucket_mass(ages)
    np.testing.assert_allclose(got.bucket_probabilities, expected_buckets, atol=1e-6)
    np.testing.assert_allclose(got.bucket_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_an_age_exponent_widens_the_interval_of_an_older_face() -> None:
    ages = np.arange(AGES, dtype=np.float64)
    logits = -0.5 * ((ages[None, :] - np.array([[10.0], [70.0]])) / 3.0) ** 2
    flat, growing = (
        HeadCombination(
            age_heads=((REGRESSOR_NAME, Tempering(1.0, exponent)),),
            gender_heads=(REGRESSOR_NAME,),
            interval_level=LEVEL,
            bucket_head=REGRESSOR_NAME,
        )
        for exponent in (0.0, 0.5)
    )
    heads = {
        REGRESSOR_NAME: {
            "age_logits": logits,
            "gender": np.tile([0.5, 0.5], (2, 1)),
            "age_bucket": np.full((2, len(AGE_BUCKET_LABELS)), 0.2),
        }
    }

    flat_width = np.diff(flat.combine(heads).age_interval, axis=1).ravel()
    growing_width = np.diff(growing.combine(heads).age_interval, axis=1).ravel()

    assert flat_width[0] == pytest.approx(flat_width[1], rel=1e-3)  # one temperature for both
    # (1 + 10) / 26 < 1 narrows the child's; (1 + 70) / 26 > 1 widens the older face's.
    assert growing_width[0] < flat_width[0] and growing_width[1] > flat_width[1]


def test_no_face_gives_empty_answers() -> None:
    empty = np.zeros((0, AGES))
    got = both_heads().combine(outputs(empty, empty, rows=0))

    assert got.age_years.shape == (0,) and got.age_interval.shape == (0, 2)
    assert got.bucket_probabilities.shape == (0, len(AGE_BUCKET_LABELS))


def test_the_combination_needs_no_tensorflow() -> None:
    code = (
        "import sys; import facedemo.head_combination; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("edge", [25, 50, 75])
def test_at_a_bucket_edge_the_buckets_above_blend_over_with_the_bucket_head(edge: int) -> None:
    # The relation AgeEstimate.over states: the buckets above an edge sum to
    # (1 - BUCKET_HEAD_WEIGHT) x P(age >= edge) + BUCKET_HEAD_WEIGHT x the bucket head's share.
    rng = np.random.default_rng(edge)
    classifier_age, regressor_age = rng.normal(scale=3.0, size=(2, 6, AGES))
    heads = outputs(classifier_age, regressor_age, rows=6)
    heads[CLASSIFIER_NAME]["age_bucket"] = rng.dirichlet(np.ones(len(AGE_BUCKET_LABELS)), 6)
    first_above = edge // 25

    got = both_heads().combine(heads)

    over = probability_over(got.age_distribution, [edge])[:, 0]
    head_above = heads[CLASSIFIER_NAME]["age_bucket"][:, first_above:].sum(axis=1)
    np.testing.assert_allclose(
        got.bucket_probabilities[:, first_above:].sum(axis=1),
        (1 - BUCKET_HEAD_WEIGHT) * over + BUCKET_HEAD_WEIGHT * head_above,
        atol=1e-5,
    )
    np.testing.assert_allclose(got.age_distribution.sum(axis=1), 1.0, atol=1e-5)
