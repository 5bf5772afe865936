"""The age-distribution head both models train: its loss, metric and calibration.

The head outputs logits over integer ages 0..116, trained against a Gaussian label distribution
(sigma 2.5 years, so neighbouring ages share credit: labels are noisy; `--age-sigma-growth` widens
it for older faces, whose labels are guessed less precisely) plus an L1 term on the expected age.
A temperature per model, fitted on the calibration split (never the validation split), makes the
10%-90% quantiles of the distribution an 80% interval; it grows with the age the model gives a
face as far as that evens out the coverage across ages (`fit_tempering`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from facedemo.age_distribution import Tempering, age_summary, fit_tempering, interval_coverage
from facedemo.manifest import OutputSpec
from facedemo.utkface_names import MAX_AGE

AGES = MAX_AGE + 1  # logits over 0..116
LABEL_SIGMA_YEARS = 2.5  # at SIGMA_ANCHOR_AGE, the 25-49 bucket's lower edge, where most faces are
SIGMA_ANCHOR_AGE = 25.0
MIN_LABEL_SIGMA_YEARS = 1.0
EXPECTED_AGE_L1_WEIGHT = 0.05  # the default share of the L1 term (`--age-l1-weight`)
INTERVAL_LEVEL = 0.8
AGE_LOGITS_SPEC = OutputSpec(kind="logits", labels=[str(age) for age in range(AGES)])


def label_sigma(true_age: tf.Tensor, sigma_growth: float) -> tf.Tensor:
    """The label distribution's spread for each true age: 2.5 years at 25, `sigma_growth` years
    more (or less) per year of age, never under a year."""
    sigma = LABEL_SIGMA_YEARS + sigma_growth * (true_age - SIGMA_ANCHOR_AGE)
    return tf.maximum(sigma, MIN_LABEL_SIGMA_YEARS)


def age_distribution_loss(
    l1_weight: float, sigma_growth: float = 0.0
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Cross-entropy against a Gaussian around the true age (spread: `label_sigma`) +
    `l1_weight` x L1 of the expected age."""

    def loss(true_age: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        ages = tf.range(AGES, dtype=tf.float32)
        true_age = tf.reshape(tf.cast(true_age, tf.float32), (-1, 1))
        sigma = label_sigma(true_age, sigma_growth)
        target = tf.exp(-0.5 * tf.square((ages - true_age) / sigma))
        target /= tf.reduce_sum(target, axis=1, keepdims=True)
        log_probabilities = tf.nn.log_softmax(logits, axis=1)
        cross_entropy = -tf.reduce_sum(target * log_probabilities, axis=1)
        expected = tf.reduce_sum(tf.exp(log_probabilities) * ages, axis=1)
        return cross_entropy + l1_weight * tf.abs(expected - true_age[:, 0])

    return loss


def expected_age_mae(true_age: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Training-time metric: |expected age - true age|."""
    expected = tf.reduce_sum(
        tf.nn.softmax(logits, axis=1) * tf.range(AGES, dtype=tf.float32), axis=1
    )
    return tf.abs(expected - tf.reshape(tf.cast(true_age, tf.float32), (-1,)))


def calibrate(
    calibration_logits: np.ndarray, calibration_ages: np.ndarray
) -> tuple[Tempering, float]:
    """The tempering fitted on the calibration split, and the coverage it gives there."""
    tempering = fit_tempering(calibration_logits, calibration_ages, INTERVAL_LEVEL)
    _, interval = age_summary(
        calibration_logits, tempering.temperature, INTERVAL_LEVEL, tempering.age_exponent
    )
    return tempering, interval_coverage(interval, calibration_ages)
