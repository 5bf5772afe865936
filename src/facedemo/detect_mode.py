"""How faces are found in an image: the `detect` choice of the API, the CLI and the client.

A module of its own, with no imports beyond the standard library, so that `facedemo.schemas` and
`facedemo.client` can name it without importing the pipeline (numpy, Pillow, TensorFlow).
"""

from __future__ import annotations

from enum import Enum


class DetectMode(str, Enum):
    """How faces are found in an image."""

    AUTO = "auto"  # detect every face, align each to the training crops' geometry
    SKIP = "skip"  # the image is already a face crop: use all of it


DEFAULT_DETECT_MODE = DetectMode.AUTO
