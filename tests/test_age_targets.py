"""The age head's loss: a Gaussian label distribution plus a weighted L1 on the expected age."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train.age_targets import (
    AGES,
    EXPECTED_AGE_L1_WEIGHT,
    LABEL_SIGMA_YEARS,
    age_distribution_loss,
    label_sigma,
)


def peaked_logits(age: int) -> tf.Tensor:
    """Logits whose softmax puts nearly all its mass on `age`."""
    return tf.constant(np.where(np.arange(AGES) == age, 20.0, 0.0)[None, :], tf.float32)


def expected_age(logits: tf.Tensor) -> float:
    return float(tf.reduce_sum(tf.nn.softmax(logits) * tf.range(AGES, dtype=tf.float32)))


def test_the_loss_is_lowest_for_a_distribution_at_the_true_age() -> None:
    loss = age_distribution_loss(EXPECTED_AGE_L1_WEIGHT)
    true_age = tf.constant([30.0])

    at_age = float(loss(true_age, peaked_logits(30))[0])
    near = float(loss(true_age, peaked_logits(32))[0])
    far = float(loss(true_age, peaked_logits(60))[0])

    assert at_age < near < far


@pytest.mark.parametrize("l1_weight", [0.5, 2.0])
def test_the_l1_weight_scales_the_distance_of_the_expected_age(l1_weight: float) -> None:
    true_age = tf.constant([40.0, 7.0])
    logits = tf.constant(np.random.default_rng(0).normal(size=(2, AGES)), tf.float32)
    distances = np.abs([expected_age(logits[:1]) - 40.0, expected_age(logits[1:]) - 7.0])

    without = age_distribution_loss(0.0)(true_age, logits).numpy()
    weighted = age_distribution_loss(l1_weight)(true_age, logits).numpy()

    np.testing.assert_allclose(weighted - without, l1_weight * distances, rtol=1e-4)


def test_the_label_spread_grows_with_age_from_its_anchor_and_never_falls_under_a_year() -> None:
    ages = tf.constant([0.0, 10.0, 25.0, 50.0, 75.0])

    np.testing.assert_allclose(label_sigma(ages, 0.0).numpy(), [LABEL_SIGMA_YEARS] * 5)
    np.testing.assert_allclose(label_sigma(ages, 0.08).numpy(), [1.0, 1.3, 2.5, 4.5, 6.5])


def test_the_loss_is_lowest_for_the_label_distribution_of_its_own_spread() -> None:
    """At 60 with growth 0.08 the target's spread is 5.3 years: the loss prefers a prediction of
    that spread to one of the fixed 2.5 years, and the loss without growth the other way round."""
    ages = np.arange(AGES, dtype=np.float32)

    def gaussian_logits(sigma: float) -> tf.Tensor:
        return tf.constant(-0.5 * ((ages - 60.0) / sigma) ** 2, tf.float32)[None, :]

    true_age = tf.constant([60.0])
    wide, narrow = gaussian_logits(5.3), gaussian_logits(LABEL_SIGMA_YEARS)
    growing, fixed = age_distribution_loss(0.0, 0.08), age_distribution_loss(0.0)

    assert float(growing(true_age, wide)[0]) < float(growing(true_age, narrow)[0])
    assert float(fixed(true_age, narrow)[0]) < float(fixed(true_age, wide)[0])
