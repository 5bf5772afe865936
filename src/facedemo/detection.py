"""Face detection: what every detector gives, and the choice of one (FACEDEMO_DETECTOR).

Two detectors find faces with five landmarks each, which `alignment.align_face` needs:

- `retinaface` (the default): RetinaFace-MobileNet-0.25 in ONNX Runtime on the CPU
  (`retinaface_detector.py`); on real photos (WIDER FACE) it finds 91% of the faces of at least
  40 px where MTCNN finds 82%, in less CPU time (bench/README.md, "Face detection on real
  photos");
- `mtcnn`: MTCNN in TensorFlow on the models' device (`mtcnn_detector.py`), the detector before
  it, kept to compare with and to fall back on.

Both are imported only when chosen: each loads its own runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from facedemo.imaging import resize_rgb

if TYPE_CHECKING:
    from facedemo.config import Settings
    from facedemo.schemas import DetectorInfo, ModelRef


@dataclass(frozen=True)
class Detection:
    """One face in pixels of the image given to a detector's `detect`."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, clipped to the image
    confidence: float  # the detector's face probability
    # (5, 2) float x, y: left eye, right eye, nose, mouth left, mouth right, "left" meaning the
    # image's left (the person's right) for an upright face.
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        """The box's area in square pixels."""
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


class FaceDetector(Protocol):
    """What the pipeline needs of a detector; `detect` may be called from several threads."""

    @property
    def max_side(self) -> int:
        """The longest side (px) an image is shrunk to before detection."""

    @property
    def template(self) -> np.ndarray:
        """Where this detector puts the five landmarks in a UTKFace chip (fractions of its
        side): the target of `alignment.align_face`, so crops look like the training chips."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in an RGB uint8 image (height, width, 3), largest box first; [] if none."""

    def info(self) -> DetectorInfo:
        """Which detector this is, its weights, runtime and settings, for /models."""

    def model_ref(self) -> ModelRef:
        """The detector as one of an answer's models: its name and its weights' version."""


def load_detector(settings: Settings, device: str) -> FaceDetector:
    """The detector FACEDEMO_DETECTOR names, with the detector_* settings, loaded and warm.

    `device` is the models' TensorFlow device (MTCNN runs there; RetinaFace on the CPU).
    """
    if settings.detector == "mtcnn":
        from facedemo.mtcnn_detector import MtcnnDetector

        return MtcnnDetector.from_settings(settings, device)
    from facedemo.retinaface_detector import RetinaFaceDetector

    return RetinaFaceDetector.from_settings(settings)


def non_maximum_suppression(
    boxes: np.ndarray, threshold: float, *, method: Literal["union", "min"] = "union"
) -> np.ndarray:
    """Indices of the rows of `boxes` (x1, y1, x2, y2, score) greedy NMS keeps, best first.

    A box is dropped when its overlap with a better kept box exceeds `threshold`; overlap is the
    intersection over the union ("union") or over the smaller box ("min").
    """
    x1, y1, x2, y2, scores = (boxes[:, column] for column in range(5))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap_width = np.maximum(
            0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest])
        )
        overlap_height = np.maximum(
            0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest])
        )
        intersection = overlap_width * overlap_height
        if method == "min":
            denominator = np.minimum(areas[best], areas[rest])
        else:
            denominator = areas[best] + areas[rest] - intersection
        overlap = intersection / np.maximum(denominator, 1e-9)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def detections_in(
    image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, max_faces: int
) -> list[Detection]:
    """Boxes (n, 5: x1, y1, x2, y2, score) and landmarks (n, 5, 2) in pixels of `image` as its
    `max_faces` largest detections, largest first, boxes clipped to the image."""
    height, width = image.shape[:2]
    corners = np.clip(boxes[:, :4].reshape(-1, 2, 2), 0.0, [width, height]).reshape(-1, 4)
    detections = [
        Detection(
            box=(float(x1), float(y1), float(x2), float(y2)),
            confidence=float(score),
            landmarks=points,
        )
        for (x1, y1, x2, y2), score, points in zip(corners, boxes[:, 4], landmarks, strict=True)
    ]
    detections.sort(key=lambda detection: detection.area, reverse=True)
    return detections[:max_faces]


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless `image` is an RGB uint8 array (height, width, 3)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must have shape (height, width, 3), got {image.shape}")


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """`image`, or a copy resized to `max_side` on its longer side when it is longer."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return image
    size = (max(1, round(height * max_side / longest)), max(1, round(width * max_side / longest)))
    return resize_rgb(image, size)


def framed(image: np.ndarray, border_fraction: float) -> tuple[np.ndarray, int]:
    """`image` framed by a border of its repeated edge pixels, `border_fraction` of its longer
    side wide, and that width in pixels (a detector's second look at a tight crop)."""
    border = max(1, round(border_fraction * max(image.shape[:2])))
    return np.pad(image, ((border, border), (border, border), (0, 0)), mode="edge"), border
