"""The training architectures stay inside the issue's inference budget, counted right."""

from __future__ import annotations

from collections.abc import Callable

import keras
import pytest
from keras import layers

from train.age_targets import AGES
from train.architectures import ARCHITECTURES, classifier_model, count_flops, regressor_model

FLOPS_BUDGET = 100e6  # per face, per model (issue 3: "well under 100 MFLOPs per face")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("build", [classifier_model, regressor_model])
def test_each_model_at_64_pixels_costs_well_under_the_budget(
    build: Callable[..., keras.Model], architecture: str
) -> None:
    model = build(64, 1.0, 0.3, AGES, architecture)

    assert count_flops(model) < 0.8 * FLOPS_BUDGET
    assert model.get_layer("gender").output.shape == (None, 2)


def test_the_residual_backbone_adds_its_shortcuts_at_each_stage() -> None:
    model = classifier_model(64, 1.0, 0.3, AGES, "residual")

    adds = [layer for layer in model.layers if isinstance(layer, layers.Add)]
    assert len(adds) == 3
    assert model.get_layer("pool").input.shape == (None, 4, 4, 160)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_stride_3_stem_gives_96_pixels_the_64_pixel_feature_maps(architecture: str) -> None:
    at_64 = classifier_model(64, 1.0, 0.3, AGES, architecture)
    at_96 = classifier_model(96, 1.0, 0.3, AGES, architecture, stem_stride=3)

    assert at_96.get_layer("stem").kernel_size == (5, 5)
    assert at_96.get_layer("stem").output.shape == at_64.get_layer("stem").output.shape
    assert at_96.get_layer("pool").input.shape == at_64.get_layer("pool").input.shape
    assert count_flops(at_96) < 1.1 * count_flops(at_64)


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        classifier_model(64, 1.0, 0.3, AGES, "transformer")


def test_count_flops_counts_multiply_adds_twice() -> None:
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)  # 8*8*4*3*9 MACs
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)  # 8*8*4*9 MACs
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5)(x)  # 4*5 MACs
    model = keras.Model(inputs, outputs)

    assert count_flops(model) == 2 * (8 * 8 * 4 * 3 * 9 + 8 * 8 * 4 * 9 + 4 * 5)
