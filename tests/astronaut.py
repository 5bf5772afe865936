"""skimage's astronaut (Eileen Collins, public domain; shipped inside scikit-image, so no network
and no ../shared) as a real face for the detector tests: where her face is, and group photos
made by pasting her head at several sizes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from facedemo.imaging import resize_rgb

# Where the astronaut's face is in skimage's 512x512 image (x1, y1, x2, y2), checked by eye.
ASTRONAUT_FACE = (182, 62, 267, 172)
# Pasted copies of the astronaut's head in the group photo: (scale, left, top).
GROUP_LAYOUT = ((1.5, 40, 60), (1.0, 420, 200), (0.6, 760, 300))
GROUP_SIZE = (600, 1000)  # height, width


def head(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut's head with some margin: 210 rows x 190 columns."""
    return astronaut[20:230, 130:320]


def group_photo(astronaut: np.ndarray) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """A grey canvas with the head pasted at three sizes, and where each face should be."""
    canvas = np.full((*GROUP_SIZE, 3), 128, np.uint8)
    expected: list[tuple[float, ...]] = []
    x1, y1, x2, y2 = ASTRONAUT_FACE
    for scale, left, top in GROUP_LAYOUT:
        pasted = head(astronaut)
        size = (round(pasted.shape[0] * scale), round(pasted.shape[1] * scale))
        pasted = resize_rgb(np.ascontiguousarray(pasted), size)
        canvas[top : top + size[0], left : left + size[1]] = pasted
        expected.append(
            (
                left + (x1 - 130) * scale,
                top + (y1 - 20) * scale,
                left + (x2 - 130) * scale,
                top + (y2 - 20) * scale,
            )
        )
    return canvas, expected


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def jpeg(image: np.ndarray, **params: object) -> bytes:
    """`image` as a quality-95 JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, **params)
    return buffer.getvalue()
