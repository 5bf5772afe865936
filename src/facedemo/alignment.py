"""Face alignment: warp a detected face so that it looks like the models' training crops.

The models learnt from UTKFace's "aligned & cropped" 200x200 chips, each resized whole to the
input size with `imaging.resize_rgb`. `align_face` rebuilds such a chip from any photo: the
similarity transform (rotation, uniform scale, translation) that best carries the face's five
landmarks onto the detector's template (where that detector puts them in UTKFace chips; least
squares, Umeyama 1991) warps the photo into a 200x200 chip, which is then resized exactly as in
training.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from facedemo.imaging import resize_rgb

CHIP_SIZE = 200  # side of a UTKFace aligned & cropped chip, in pixels


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix that maps `source` points onto `target` with least squares.

    Both are (n, 2) arrays of x, y with n >= 2; a reflection is never chosen. Apply the result
    to a point p as `matrix[:, :2] @ p + matrix[:, 2]`.
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"need two (n, 2) point arrays, got {source.shape} and {target.shape}")
    if len(source) < 2:
        raise ValueError("need at least two point pairs")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance <= 0:
        raise ValueError("the source points all coincide")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.column_stack([scale * rotation, translation])


def align_face(
    image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """The face whose five landmarks are `landmarks` as a training-like crop of (height, width).

    `landmarks` is (5, 2) x, y in pixels of `image` (RGB uint8); `template` (5, 2) is where the
    detector that found them puts them in a UTKFace chip, as fractions of its side
    (`FaceDetector.template`). Parts of the chip outside the image repeat its edge pixels (see
    `warp_chip`).
    """
    chip_to_image = similarity_transform(template * CHIP_SIZE, landmarks)
    return resize_rgb(warp_chip(image, chip_to_image, CHIP_SIZE), size)


def warp_chip(image: np.ndarray, chip_to_image: np.ndarray, side: int) -> np.ndarray:
    """A side x side RGB chip whose pixel (x, y) shows `image` at `chip_to_image` @ (x, y, 1).

    Coordinates are pixel indices (pixel centres at integers). When a chip pixel spans more than
    one image pixel, the region under the chip is first shrunk with antialiasing, so a large face
    does not alias. Where the chip reaches outside the image, the image's edge pixels are
    repeated: a face cropped tightly (or cut by the image's edge) then looks more like a training
    chip than with black there, and is estimated better (docs/models.md, "Detection and
    alignment").
    """
    matrix = np.asarray(chip_to_image, np.float64).copy()
    height, width = image.shape[:2]
    corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float64) - 0.5
    footprint = corners @ matrix[:, :2].T + matrix[:, 2]
    left = math.floor(footprint[:, 0].min()) - 1
    top = math.floor(footprint[:, 1].min()) - 1
    right = math.ceil(footprint[:, 0].max()) + 2
    bottom = math.ceil(footprint[:, 1].max()) + 2
    inside = image[max(0, top) : min(height, bottom), max(0, left) : min(width, right)]
    if inside.size == 0:
        return np.zeros((side, side, 3), np.uint8)
    outside = (
        (max(0, -top), max(0, bottom - height)),
        (max(0, -left), max(0, right - width)),
        (0, 0),
    )
    region = np.pad(inside, outside, mode="edge")
    matrix[:, 2] -= [left, top]
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale > 1.0:
        region_height, region_width = region.shape[:2]
        shrunk = (max(1, round(region_height / scale)), max(1, round(region_width / scale)))
        region = resize_rgb(region, shrunk)
        factors = np.array([shrunk[1] / region_width, shrunk[0] / region_height])
        # Pillow's resize maps pixel edges onto pixel edges: centre i goes to (i + 0.5) * f - 0.5.
        matrix = matrix * factors[:, None]
        matrix[:, 2] += 0.5 * (factors - 1.0)
    # Pillow's AFFINE maps output to input in continuous coordinates (pixel centres at +0.5).
    linear, offset = matrix[:, :2], matrix[:, 2]
    offset = offset + 0.5 - linear @ [0.5, 0.5]
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    chip = Image.fromarray(np.ascontiguousarray(region)).transform(
        (side, side),
        Image.Transform.AFFINE,
        data=tuple(float(value) for value in coefficients),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    return np.asarray(chip, dtype=np.uint8)
