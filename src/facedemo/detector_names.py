"""The face detectors FACEDEMO_DETECTOR chooses between (`detection.py` says what each is).

A module of its own so that the settings and the answer types name them without importing a
detector, numpy or the settings.
"""

from __future__ import annotations

from typing import Literal, get_args

DetectorName = Literal["retinaface", "mtcnn"]
DETECTOR_NAMES: tuple[str, ...] = get_args(DetectorName)
DEFAULT_DETECTOR: DetectorName = "retinaface"
