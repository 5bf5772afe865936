"""The training architectures stay inside the issue's inference budget, counted right."""

from __future__ import annotations

from collections.abc import Callable

import keras
import pytest
from keras import layers

from train.age_targets import AGES
from train.architectures import classifier_model, count_flops, regressor_model

FLOPS_BUDGET = 100e6  # per face, per model (issue 3: "well under 100 MFLOPs per face")


@pytest.mark.parametrize("build", [classifier_model, regressor_model])
def test_each_model_at_64_pixels_costs_well_under_the_budget(
    build: Callable[..., keras.Model],
) -> None:
    model = build(64, 1.0, 0.3, AGES)

    assert count_flops(model) < 0.8 * FLOPS_BUDGET
    assert model.get_layer("gender").output.shape == (None, 2)


def test_count_flops_counts_multiply_adds_twice() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 8*8*4*3*9 MACs
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)  # 8*8*4*9 MACs
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)  # 4*5 MACs
    model = keras.Model(inputs, outputs)

    assert count_flops(model) == 2 * (8 * 8 * 4 * 3 * 9 + 8 * 8 * 4 * 9 + 4 * 5)
