"""What batching the detector's stages across concurrent photos would save, before building it.

    .venv/bin/python -m bench.detector_batching /path/to/UTKFace --photos 8 --rounds 3

Makes `photos` group photos of one size (bench/photos.py), shrinks them to the detector's
640-pixel side as `MtcnnDetector.detect` does, and times, with one thread a TensorFlow op (the
service's default) and in CPU seconds:

- P-Net over the whole pyramid, one photo a call (as the service runs it) against all the photos
  in one call per pyramid level (what a cross-request batcher for same-size photos would do);
- R-Net on 192 windows (a photo's ~160, padded to the bucket) in one call, against the same
  windows' share of calls of 512 (several photos' windows together).

Each line is one round; compare the two figures within a round.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from bench.photos import group_photos
from mtcnn.network.onet import ONet
from mtcnn.network.pnet import PNet
from mtcnn.network.rnet import RNet

from facedemo import detection
from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS
from facedemo.imaging import decode_reduced

REFINE_WINDOWS = 192  # a photo's R-Net bucket
REFINE_SHARED = 512  # the largest R-Net bucket, filled by several photos


def cpu_milliseconds(function: Callable[[], object], repeats: int) -> float:
    """CPU time of one call of `function`, in ms, over `repeats` calls."""
    started = time.process_time()
    for _ in range(repeats):
        function()
    return (time.process_time() - started) / repeats * 1000


def shrunk_photos(utkface: Path, count: int) -> np.ndarray:
    """`count` group photos decoded and shrunk as the detector sees them, stacked."""
    images = []
    for photo in group_photos(utkface, count):
        reduced = decode_reduced(
            photo.jpeg,
            max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
            longest_side=detection.DEFAULT_MAX_SIDE,
        )
        images.append(detection._shrink(reduced.pixels, detection.DEFAULT_MAX_SIDE))
    return np.stack(images)


def pnet_pyramid(images: np.ndarray) -> Callable[[tf.Tensor], None]:
    """P-Net over every pyramid level of a batch of same-size images."""
    pnet = detection._network(PNet, "pnet.lz4")
    height, width = images.shape[1:3]
    levels = []
    for scale in detection.pyramid_scales(min(height, width), detection.DEFAULT_MIN_FACE_SIZE):
        size = (int(height * scale), int(width * scale))
        padded = tuple(detection._round_up(side, detection.LEVEL_BUCKET) for side in size)
        levels.append((tf.constant(size), tf.constant(padded)))

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.uint8),
            tf.TensorSpec((2,), tf.int32),
            tf.TensorSpec((2,), tf.int32),
        ]
    )
    def propose(pixels: tf.Tensor, size: tf.Tensor, padded: tf.Tensor) -> tuple[tf.Tensor, ...]:
        level = detection._normalise(tf.image.resize(pixels, size, method="area"))
        padding = padded - size
        level = tf.pad(level, [[0, 0], [0, padding[0]], [0, padding[1]], [0, 0]])
        offsets, probabilities = pnet(level, training=False)
        return offsets, probabilities[..., 1]

    def run(batch: tf.Tensor) -> None:
        for size, padded in levels:
            for output in propose(batch, size, padded):
                output.numpy()

    return run


def rnet_windows(image: np.ndarray) -> Callable[[tf.Tensor], None]:
    """The detector's R-Net stage on a batch of windows (fractions y1, x1, y2, x2) of `image`."""
    stages = detection._compile_stages(
        detection._network(PNet, "pnet.lz4"),
        detection._network(RNet, "rnet.lz4"),
        detection._network(ONet, "onet.lz4"),
    )
    pixels = tf.constant(image)
    return lambda boxes: stages.refine(pixels, boxes)[1].numpy()


def random_windows(count: int, seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.0, 0.8, (count, 2))
    side = rng.uniform(0.03, 0.2, (count, 1))
    return tf.constant(np.hstack([corner, corner + side]).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    """Print, per round, P-Net and R-Net CPU ms a photo, alone and batched across photos."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("utkface", type=Path, help="UTKFace folder (chips for the photos)")
    parser.add_argument("--photos", type=int, default=8, help="concurrent photos to batch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    images = shrunk_photos(args.utkface, args.photos)
    pyramid = pnet_pyramid(images)
    alone = [tf.constant(image[None]) for image in images]
    together = tf.constant(images)
    refine = rnet_windows(images[0])
    few, many = random_windows(REFINE_WINDOWS), random_windows(REFINE_SHARED)
    pyramid(alone[0])  # warm-up: the first calls of each shape trace and tune
    pyramid(together)
    refine(few)
    refine(many)

    count = len(images)
    print(f"{count} photos of {images.shape[2]}x{images.shape[1]} px, one thread an op, CPU ms")
    for round_number in range(1, args.rounds + 1):
        separately = cpu_milliseconds(lambda: [pyramid(image) for image in alone], 1) / count
        batched = cpu_milliseconds(lambda: pyramid(together), 1) / count
        own_call = cpu_milliseconds(lambda: refine(few), count)
        shared = cpu_milliseconds(lambda: refine(many), count) * REFINE_WINDOWS / REFINE_SHARED
        print(
            f"round {round_number}: P-Net a photo {separately:.1f} alone, {batched:.1f} batched; "
            f"R-Net {REFINE_WINDOWS} windows {own_call:.1f} in their own call, "
            f"{shared:.1f} in calls of {REFINE_SHARED}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
