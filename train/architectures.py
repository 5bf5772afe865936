"""Small CNNs sized for CPU training and well under 100 MFLOPs per face.

Two backbones: `separable` (depthwise-separable blocks, the fewest FLOPs) and `residual` (plain
3x3 convolutions with residual blocks, the served bundles': more FLOPs, but this CPU trains it on
over twice as many faces a second, as TensorFlow runs dense convolutions far closer to the CPU's
peak than depthwise ones; docs/models.md, "Backbone: residual against separable").
"""

from __future__ import annotations

import keras
from keras import layers

# Each backbone's name on the command line, and how a model card introduces a model built on it.
ARCHITECTURES = {
    "separable": "A depthwise-separable CNN",
    "residual": "A residual CNN of plain 3x3 convolutions",
}

# (filters, stride) of each depthwise-separable block after the stem.
BACKBONE_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (512, 2))

# Filters of each residual stage after the stem: a stride-2 convolution, then one residual block.
RESIDUAL_STAGES = (40, 80, 160)


def _separable_block(
    x: keras.KerasTensor, filters: int, stride: int, name: str
) -> keras.KerasTensor:
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def _convolution(
    x: keras.KerasTensor,
    filters: int,
    stride: int,
    name: str,
    relu: bool = True,
    relu_max: float | None = None,
    kernel: int = 3,
) -> keras.KerasTensor:
    """Convolution (kernel x kernel) and batch norm, then (with `relu`) a ReLU capped at
    `relu_max`."""
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(relu_max, name=f"{name}_relu")(x) if relu else x


def _residual_stage(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    x = _convolution(x, filters, 2, name=f"{name}_down")
    shortcut = x
    x = _convolution(x, filters, 1, name=f"{name}_conv1")
    x = _convolution(x, filters, 1, name=f"{name}_conv2", relu=False)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, x]))


def _stem(
    x: keras.KerasTensor, filters: int, stride: int, relu_max: float | None = None
) -> keras.KerasTensor:
    """The first convolution: stride 2 with a 3x3 kernel, stride 3 with 5x5 (each kernel
    overlaps its neighbours by a pixel on each side)."""
    return _convolution(x, filters, stride, name="stem", relu_max=relu_max, kernel=2 * stride - 1)


def _separable_features(x: keras.KerasTensor, width: float, stem_stride: int) -> keras.KerasTensor:
    x = _stem(x, int(32 * width), stem_stride, relu_max=6.0)
    for index, (filters, stride) in enumerate(BACKBONE_BLOCKS):
        x = _separable_block(x, int(filters * width), stride, name=f"block{index + 1}")
    return x


def _residual_features(x: keras.KerasTensor, width: float, stem_stride: int) -> keras.KerasTensor:
    x = _stem(x, int(RESIDUAL_STAGES[0] * width) // 2, stem_stride)
    for index, filters in enumerate(RESIDUAL_STAGES):
        x = _residual_stage(x, int(filters * width), name=f"stage{index + 1}")
    return x


def backbone(
    inputs: keras.KerasTensor,
    width: float = 1.0,
    architecture: str = "separable",
    stem_stride: int = 2,
) -> keras.KerasTensor:
    """Pixels 0..255 -> a pooled feature vector.

    `stem_stride` 3 lets a 96-pixel input reach the same 32x32 map after the stem as a
    64-pixel one does with the default 2, for about the same FLOPs.
    """
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    if architecture == "separable":
        x = _separable_features(x, width, stem_stride)
    elif architecture == "residual":
        x = _residual_features(x, width, stem_stride)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; one of {list(ARCHITECTURES)}")
    return layers.GlobalAveragePooling2D(name="pool")(x)


def _face_features(
    size: int, width: float, dropout: float, architecture: str, stem_stride: int
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """A size x size RGB input and the backbone's features after dropout, for the heads."""
    inputs = keras.Input((size, size, 3), name="face")
    features = backbone(inputs, width, architecture, stem_stride)
    return inputs, layers.Dropout(dropout, name="dropout")(features)


def classifier_model(
    size: int,
    width: float,
    dropout: float,
    ages: int,
    architecture: str = "separable",
    stem_stride: int = 2,
) -> keras.Model:
    """Age bucket (5-way) and gender (2-way) softmax heads, plus an auxiliary age-logits head.

    The auxiliary head gives the backbone the ordering of ages that bucket labels hide, and the
    registry averages its calibrated distribution with the regressor's.
    """
    inputs, features = _face_features(size, width, dropout, architecture, stem_stride)
    outputs = {
        "age_bucket": layers.Dense(5, activation="softmax", name="age_bucket")(features),
        "gender": layers.Dense(2, activation="softmax", name="gender")(features),
        "age_logits": layers.Dense(ages, name="age_logits")(features),
    }
    return keras.Model(inputs, outputs, name="age_gender_classifier")


def regressor_model(
    size: int,
    width: float,
    dropout: float,
    ages: int,
    architecture: str = "separable",
    stem_stride: int = 2,
) -> keras.Model:
    """Logits over integer ages 0..ages-1, plus an auxiliary gender head.

    The age distribution gives the mean and the interval; the registry averages the gender head
    with the classifier's.
    """
    inputs, features = _face_features(size, width, dropout, architecture, stem_stride)
    outputs = {
        "age_logits": layers.Dense(ages, name="age_logits")(features),
        "gender": layers.Dense(2, activation="softmax", name="gender")(features),
    }
    return keras.Model(inputs, outputs, name="age_regressor")


def count_flops(model: keras.Model) -> int:
    """Multiply-adds x 2 of the convolution and dense layers for one face."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            _, height, width, channels = layer.output.shape
            total += 2 * height * width * channels * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, layers.Conv2D):
            _, height, width, filters = layer.output.shape
            channels = layer.input.shape[-1]
            total += (
                2
                * height
                * width
                * filters
                * channels
                * layer.kernel_size[0]
                * layer.kernel_size[1]
            )
        elif isinstance(layer, layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)
