"""The training augmentation: its strength knob, the degradations, and what evaluation batches
are left alone."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train.augment import Degradations, augment_batch, make_dataset


def _faces(count: int = 32, size: int = 32) -> np.ndarray:
    """Asymmetric, smooth test images: a diagonal ramp plus a bright off-centre square."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1)
    image[4:12, 18:28] = 250.0
    offsets = np.linspace(0, 40, count, dtype=np.float32)[:, None, None, None]
    return np.clip(image[None] + offsets, 0, 255).astype(np.float32)


def _distance_from_flips(original: np.ndarray, augmented: np.ndarray) -> np.ndarray:
    """Per image, the mean absolute difference to the original or its mirror (the nearer)."""
    plain = np.abs(augmented - original).mean(axis=(1, 2, 3))
    mirrored = np.abs(augmented - original[:, :, ::-1]).mean(axis=(1, 2, 3))
    return np.minimum(plain, mirrored)


def test_strength_zero_only_flips() -> None:
    tf.random.set_seed(7)
    images = _faces()
    augmented = augment_batch(tf.constant(images), 0.0).numpy()
    assert np.allclose(_distance_from_flips(images, augmented), 0.0, atol=1e-3)
    flipped = np.abs(augmented - images).mean(axis=(1, 2, 3)) > 1.0
    assert 0 < flipped.sum() < len(images)  # some mirrored, some not


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_augmented_batches_keep_shape_and_pixel_range(strength: float) -> None:
    tf.random.set_seed(8)
    images = _faces()
    augmented = augment_batch(tf.constant(images), strength).numpy()
    assert augmented.shape == images.shape
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert (_distance_from_flips(images, augmented) > 0.5).all()


def test_a_stronger_augmentation_moves_images_further() -> None:
    images = _faces(count=128)
    distances = {}
    for strength in (0.25, 1.0):
        tf.random.set_seed(9)
        augmented = augment_batch(tf.constant(images), strength).numpy()
        distances[strength] = _distance_from_flips(images, augmented).mean()
    assert distances[1.0] > 2 * distances[0.25] > 0


def _grey(images: np.ndarray) -> np.ndarray:
    """Per image, whether its three channels are equal."""
    return np.isclose(images, images[..., :1], atol=1e-3).all(axis=(1, 2, 3))


def test_greyscale_is_drawn_per_image() -> None:
    tf.random.set_seed(10)
    images = _faces(count=64)
    everything = augment_batch(tf.constant(images), 0.0, Degradations(greyscale=1.0)).numpy()
    assert _grey(everything).all()
    some = augment_batch(tf.constant(images), 0.0, Degradations(greyscale=0.5)).numpy()
    assert 10 < _grey(some).sum() < 54
    assert not _grey(augment_batch(tf.constant(images), 0.0).numpy()).any()


def test_zoomed_out_images_are_framed_by_their_edge_pixels() -> None:
    tf.random.set_seed(11)
    images = _faces()
    zoomed = augment_batch(tf.constant(images), 0.0, Degradations(zoom_out=1.0)).numpy()
    # At strength 0 nothing but the flip and the shrinking moves a pixel: each corner of the
    # frame repeats a corner of the (possibly mirrored) original.
    corners = zoomed[:, 0, 0]
    near = np.minimum(
        np.abs(corners - images[:, 0, 0]).max(axis=1),
        np.abs(corners - images[:, 0, -1]).max(axis=1),
    )
    assert np.allclose(near, 0.0, atol=1e-3)
    assert (_distance_from_flips(images, zoomed) > 2.0).all()


def test_low_resolution_removes_fine_detail() -> None:
    tf.random.set_seed(12)
    noise = np.random.default_rng(0).uniform(0, 255, (16, 64, 64, 3)).astype(np.float32)

    def detail(batch: np.ndarray) -> float:
        return float(np.abs(np.diff(batch, axis=2)).mean())

    coarse = augment_batch(tf.constant(noise), 0.0, Degradations(low_resolution=1.0)).numpy()
    assert detail(coarse) < detail(noise) / 3


def test_evaluation_batches_are_neither_augmented_nor_shuffled() -> None:
    images = _faces(count=10).astype(np.uint8)
    ages = np.arange(10, dtype=np.float32)
    dataset = make_dataset(
        images,
        {"age": ages},
        batch_size=4,
        training=False,
        seed=1,
        degradations=Degradations(greyscale=1.0, low_resolution=1.0, zoom_out=1.0),
    )
    batches = list(dataset.as_numpy_iterator())
    assert [len(batch[0]) for batch in batches] == [4, 4, 2]
    assert np.array_equal(np.concatenate([batch[0] for batch in batches]), images)
    assert np.array_equal(np.concatenate([batch[1]["age"] for batch in batches]), ages)
