"""Decode and normalise uploaded images. The only module that opens images with Pillow."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 array to (height, width) with antialiased bilinear filtering.

    Training and serving both call this, so a served crop is resampled exactly like a training one.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
