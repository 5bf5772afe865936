"""tf.data input pipelines with face-friendly augmentation, applied per batch on uint8 arrays."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

# The ranges at strength 1 (the default); a strength s
# multiplies each: rotation +-12s degrees, scale 1 +- 0.1s, shift +-0.06s, etc.
MAX_ROTATION_DEGREES = 12.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT_FRACTION = 0.06
MAX_BRIGHTNESS_DELTA = 0.12 * 255.0
MAX_CONTRAST_CHANGE = 0.25

# Degradations (off by default; the served regressor trained with them): a zoomed-out
# image shrinks to 65-90% of its size inside a border of its own edge pixels (as the served
# alignment frames a face near the photo's edge); a low-resolution one passes through 16-40
# pixels square and back.
ZOOM_OUT_SCALES = (0.65, 0.9)
LOW_RESOLUTION_SIDES = (16, 40)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")


@dataclasses.dataclass(frozen=True)
class Degradations:
    """Per training image, the probability of each change a served photo may bring (0: never)."""

    greyscale: float = 0.0
    low_resolution: float = 0.0
    zoom_out: float = 0.0


def _symmetric(batch_size: tf.Tensor, limit: float) -> tf.Tensor:
    """Uniform in [-limit, limit], one per image."""
    return tf.random.uniform([batch_size], -1.0, 1.0) * limit


def _chosen(batch_size: tf.Tensor, probability: float) -> tf.Tensor:
    """A (n, 1, 1, 1) mask, each image True with `probability`."""
    return tf.random.uniform([batch_size, 1, 1, 1]) < probability


def _affine_transforms(
    batch_size: tf.Tensor,
    height: int,
    width: int,
    strength: float,
    scales: tuple[float, float] | None = None,
) -> tf.Tensor:
    """Random rotation + scale + shift per image, as ImageProjectiveTransformV3 rows.

    The scale is 1 +- MAX_SCALE_CHANGE * strength, or uniform in `scales` where given.
    A transform maps an output pixel to the input pixel it samples, so the inverse of the
    wanted motion is built: rotate by -angle and divide by the scale around the centre.
    """
    angle = _symmetric(batch_size, strength * MAX_ROTATION_DEGREES * math.pi / 180)
    if scales is None:
        scale = 1.0 + _symmetric(batch_size, strength * MAX_SCALE_CHANGE)
    else:
        scale = tf.random.uniform([batch_size], *scales)
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


def _warp(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str) -> tf.Tensor:
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(0.0),
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )


def _greyscale(images: tf.Tensor) -> tf.Tensor:
    luma = tf.reduce_sum(images * tf.constant(GREY_WEIGHTS), axis=3, keepdims=True)
    return tf.tile(luma, [1, 1, 1, 3])


def _low_resolution(images: tf.Tensor) -> tf.Tensor:
    """The batch shrunk to one random side (area) and enlarged back (bilinear)."""
    side = tf.random.uniform([], LOW_RESOLUTION_SIDES[0], LOW_RESOLUTION_SIDES[1] + 1, tf.int32)
    small = tf.image.resize(images, tf.stack([side, side]), method="area")
    return tf.image.resize(small, tf.shape(images)[1:3], method="bilinear")


def augment_batch(
    images: tf.Tensor, strength: float, degradations: Degradations = Degradations()
) -> tf.Tensor:
    """Flip, rotate, scale, shift, brightness and contrast for a (n, h, w, 3) float batch,
    then the `degradations` (each image zoomed out, greyscale or low-resolution by chance).

    `strength` scales every range but the flip (0: flips only). Without degradations no
    random draw is added, so the committed bundles' augmentation is reproduced exactly.
    """
    batch_size = tf.shape(images)[0]
    height, width = int(images.shape[1]), int(images.shape[2])
    flip = tf.random.uniform([batch_size, 1, 1, 1]) < 0.5
    flipped = tf.where(flip, tf.reverse(images, axis=[2]), images)
    images = _warp(flipped, _affine_transforms(batch_size, height, width, strength), "REFLECT")
    if degradations.zoom_out > 0:
        zoomed = _warp(
            flipped,
            _affine_transforms(batch_size, height, width, strength, ZOOM_OUT_SCALES),
            "NEAREST",
        )
        images = tf.where(_chosen(batch_size, degradations.zoom_out), zoomed, images)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    per_image = [-1, 1, 1, 1]
    contrast = 1.0 + tf.reshape(_symmetric(batch_size, strength * MAX_CONTRAST_CHANGE), per_image)
    brightness = tf.reshape(_symmetric(batch_size, strength * MAX_BRIGHTNESS_DELTA), per_image)
    images = tf.clip_by_value((images - mean) * contrast + mean + brightness, 0.0, 255.0)
    if degradations.greyscale > 0:
        grey = _chosen(batch_size, degradations.greyscale)
        images = tf.where(grey, _greyscale(images), images)
    if degradations.low_resolution > 0:
        coarse = _chosen(batch_size, degradations.low_resolution)
        images = tf.where(coarse, _low_resolution(images), images)
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
    degradations: Degradations = Degradations(),
) -> tf.data.Dataset:
    """(images, targets[, sample_weights]) batches; shuffled and augmented when training.

    `augmentation` is the strength and `degradations` the degradations `augment_batch` applies
    to training batches.
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
        if not training:
            return (floats, *rest)
        return (augment_batch(floats, augmentation, degradations), *rest)

    return dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
