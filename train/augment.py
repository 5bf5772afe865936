"""tf.data input pipelines with face-friendly augmentation, applied per batch on uint8 arrays."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# The ranges at strength 1 (what the 1.0.0 and 1.1.0 bundles trained with); a strength s
# multiplies each: rotation +-12s degrees, scale 1 +- 0.1s, shift +-0.06s, etc.
MAX_ROTATION_DEGREES = 12.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT_FRACTION = 0.06
MAX_BRIGHTNESS_DELTA = 0.12 * 255.0
MAX_CONTRAST_CHANGE = 0.25


def _symmetric(batch_size: tf.Tensor, limit: float) -> tf.Tensor:
    """Uniform in [-limit, limit], one per image."""
    return tf.random.uniform([batch_size], -1.0, 1.0) * limit


def _affine_transforms(
    batch_size: tf.Tensor, height: int, width: int, strength: float
) -> tf.Tensor:
    """Random rotation + scale + shift per image, as ImageProjectiveTransformV3 rows.

    A transform maps an output pixel to the input pixel it samples, so the inverse of the
    wanted motion is built: rotate by -angle and divide by the scale around the centre.
    """
    angle = _symmetric(batch_size, strength * MAX_ROTATION_DEGREES * math.pi / 180)
    scale = 1.0 + _symmetric(batch_size, strength * MAX_SCALE_CHANGE)
    shift_x = _symmetric(batch_size, strength * MAX_SHIFT_FRACTION * width)
    shift_y = _symmetric(batch_size, strength * MAX_SHIFT_FRACTION * height)
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    a0 = tf.cos(angle) / scale
    a1 = -tf.sin(angle) / scale
    b0 = tf.sin(angle) / scale
    b1 = tf.cos(angle) / scale
    a2 = centre_x - a0 * centre_x - a1 * centre_y + shift_x
    b2 = centre_y - b0 * centre_x - b1 * centre_y + shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Flip, rotate, scale, shift, brightness and contrast for a (n, h, w, 3) float batch.

    `strength` scales every range but the flip (0: flips only).
    """
    batch_size = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    flip = tf.random.uniform([batch_size, 1, 1, 1]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    images = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=_affine_transforms(batch_size, height, width, strength),
        output_shape=tf.constant([height, width], dtype=tf.int32),
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    per_image = [-1, 1, 1, 1]
    contrast = 1.0 + tf.reshape(_symmetric(batch_size, strength * MAX_CONTRAST_CHANGE), per_image)
    brightness = tf.reshape(_symmetric(batch_size, strength * MAX_BRIGHTNESS_DELTA), per_image)
    images = (images - mean) * contrast + mean + brightness
    return tf.clip_by_value(images, 0.0, 255.0)


def make_dataset(
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    *,
    batch_size: int,
    training: bool,
    seed: int,
    sample_weights: dict[str, np.ndarray] | None = None,
    augmentation: float = 1.0,
) -> tf.data.Dataset:
    """(images, targets[, sample_weights]) batches; shuffled and augmented when training.

    `augmentation` is the strength `augment_batch` applies to training batches.
    """
    parts: tuple[object, ...] = (images, targets)
    if sample_weights is not None:
        parts = (images, targets, sample_weights)
    dataset = tf.data.Dataset.from_tensor_slices(parts)
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)

    def to_float(pixels: tf.Tensor, *rest: object) -> tuple[object, ...]:
        floats = tf.cast(pixels, tf.float32)
        return (augment_batch(floats, augmentation) if training else floats, *rest)

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
