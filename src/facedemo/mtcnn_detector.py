"""The MTCNN face detector on the weights the `mtcnn` wheel ships, compiled, batched and bounded.

FACEDEMO_DETECTOR=mtcnn chooses it; it was the only detector before RetinaFace
(`retinaface_detector.py`), which finds more faces in real photos for less CPU.

The three networks (P-Net proposes windows over an image pyramid, R-Net and O-Net refine them,
O-Net adds five landmarks) and their weights come from the installed `mtcnn` package; nothing is
downloaded. The arithmetic follows the stock `mtcnn.MTCNN` (same thresholds, box conventions and
crops, so a box gets the same scores); what differs:

- input is an RGB uint8 array that `imaging.decode_image` already checked, never bytes or paths;
- P-Net's pyramid, most of the work, runs on a copy shrunk to `max_side`; R-Net and O-Net crop
  the full-resolution image, and boxes and landmarks are in its pixels;
- the pyramid starts at 12 / `min_face_size` and stops where a level's short side drops below
  12 px, so any minimum face size works;
- each stage is one `tf.function` traced once during `MtcnnDetector.load` (unknown height, width and
  batch) and fed bucketed shapes (pyramid levels padded to multiples of 32, crop batches to a few
  fixed sizes) so a GPU sees few distinct shapes; R-Net and O-Net get all candidates of an image
  in one call; non-maximum suppression is the usual greedy one;
- O-Net's face probability must reach `confidence` (stock: 0.8, which lets false positives
  through), and only the `max_faces` largest faces are returned;
- when that finds nothing, it looks once more in a copy (shrunk to `max_side`) framed by a border
  of repeated edge pixels, `retry_border` of the longer side wide: a face that fills the image or
  is cut by its edge (a tight crop) leaves MTCNN's square windows no room. On the UTKFace
  validation chips (2,083) the first pass misses 77 faces; a 20% border finds 55 of them (10%:
  50, 30%: 56; a black border instead finds fewer: 43-50). It found no face in any of 12 faceless
  skimage photos; on them, detection takes about twice as long (bench/README.md, "Face
  detector": coffee and rocket 420-650 ms against about 250 ms for photos with faces).

`MtcnnDetector.detect` is safe to call from several threads: it keeps no state between calls.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import joblib
import keras
import numpy as np
import tensorflow as tf
from mtcnn.network.onet import ONet
from mtcnn.network.pnet import PNet
from mtcnn.network.rnet import RNet

from facedemo.config import Settings
from facedemo.detection import (
    Detection,
    check_image,
    detections_in,
    framed,
    non_maximum_suppression,
    shrink,
)

if TYPE_CHECKING:
    from facedemo.schemas import DetectorInfo, ModelRef

logger = logging.getLogger(__name__)

# Thresholds and overlaps of the MTCNN paper, as the stock package uses them; only O-Net's
# threshold is a setting (`confidence`).
PNET_THRESHOLD = 0.6
RNET_THRESHOLD = 0.7
PNET_LEVEL_OVERLAP = 0.5
PNET_OVERLAP = 0.7
RNET_OVERLAP = 0.7
ONET_OVERLAP = 0.7  # intersection over the smaller box: drops a box nested in a better one
PYRAMID_FACTOR = 0.709  # each level is half the area of the one above
PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_SIZE = 24
ONET_SIZE = 48
LEVEL_BUCKET = 32
# Crop batches are padded up to one of these sizes (steps of 1.5-2x: padding costs compute;
# larger inputs are cut into chunks of the largest). Hundreds of windows reach R-Net, few O-Net.
REFINE_BATCH_SIZES = (16, 32, 64, 96, 128, 192, 256, 384, 512)
OUTPUT_BATCH_SIZES = (4, 8, 16, 32, 64, 128)
WEIGHTS_PACKAGE = "mtcnn.assets.weights"

DEFAULT_MAX_SIDE = 640
DEFAULT_MIN_FACE_SIZE = 20
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MAX_FACES = 50
DEFAULT_RETRY_BORDER = 0.2

# Mean landmark positions (x, y as fractions of the chip side) that this detector finds in
# UTKFace aligned & cropped chips: left eye, right eye, nose, mouth left, mouth right ("left" =
# the image's left). Measured over 400 chips, one file in 53 of the sorted folder (a face was
# found in 385; standard deviations 0.013-0.035), with the detector's default settings:
#     .venv/bin/python -m bench.alignment_template /path/to/UTKFace --count 400 --detector mtcnn
TEMPLATE = np.array(
    [
        [0.2980, 0.2882],
        [0.6812, 0.2885],
        [0.4855, 0.5150],
        [0.3159, 0.6823],
        [0.6632, 0.6824],
    ]
)

LevelFunction = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
CropFunction = Callable[[tf.Tensor, tf.Tensor], Sequence[tf.Tensor]]


@dataclass(frozen=True)
class _Stages:
    """The three compiled networks."""

    propose: LevelFunction  # (pixels, level size, padded size) -> (offsets map, probability map)
    refine: CropFunction  # (pixels, boxes) -> (offsets, probabilities)
    output: CropFunction  # (pixels, boxes) -> (offsets, landmarks, probabilities)


class MtcnnDetector:
    """MTCNN face detector with compiled stages on one TensorFlow device."""

    def __init__(
        self,
        stages: _Stages,
        *,
        device: str,
        max_side: int,
        min_face_size: int,
        confidence: float,
        max_faces: int,
        retry_border: float,
    ) -> None:
        """Wrap compiled stages; use `MtcnnDetector.load` to build (and warm up) one."""
        if max_side < PNET_WINDOW:
            raise ValueError(f"max_side must be at least {PNET_WINDOW}, got {max_side}")
        if min_face_size < 1:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be within 0..1, got {confidence}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be positive, got {max_faces}")
        if not 0.0 <= retry_border <= 1.0:
            raise ValueError(f"retry_border must be within 0..1, got {retry_border}")
        self._stages = stages
        self._device = device
        self._max_side = max_side
        self._min_face_size = min_face_size
        self._confidence = confidence
        self._max_faces = max_faces
        self._retry_border = retry_border

    @classmethod
    def load(
        cls,
        *,
        device: str = "CPU:0",
        max_side: int = DEFAULT_MAX_SIDE,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        confidence: float = DEFAULT_CONFIDENCE,
        max_faces: int = DEFAULT_MAX_FACES,
        retry_border: float = DEFAULT_RETRY_BORDER,
    ) -> MtcnnDetector:
        """Load the wheel's weights onto `device` (e.g. Registry.device), compile and warm up."""
        started = time.perf_counter()
        with tf.device(device):
            stages = _compile_stages(
                _network(PNet, "pnet.lz4"), _network(RNet, "rnet.lz4"), _network(ONet, "onet.lz4")
            )
        detector = cls(
            stages,
            device=device,
            max_side=max_side,
            min_face_size=min_face_size,
            confidence=confidence,
            max_faces=max_faces,
            retry_border=retry_border,
        )
        detector._warm_up()
        logger.info(
            "face detector ready on %s in %.1f s (max side %d px, min face %d px, confidence %.2f)",
            device,
            time.perf_counter() - started,
            max_side,
            min_face_size,
            confidence,
        )
        return detector

    @classmethod
    def from_settings(cls, settings: Settings, device: str) -> MtcnnDetector:
        """`MtcnnDetector.load` with the detector_* and max_faces_per_image settings (each
        detector_* setting left unset keeps this detector's default)."""
        options: dict[str, Any] = {
            "max_side": settings.detector_max_side,
            "min_face_size": settings.detector_min_face_size,
            "confidence": settings.detector_confidence,
        }
        return cls.load(
            device=device,
            max_faces=settings.max_faces_per_image,
            **{name: value for name, value in options.items() if value is not None},
        )

    def configured(
        self,
        *,
        max_side: int | None = None,
        min_face_size: int | None = None,
        confidence: float | None = None,
        max_faces: int | None = None,
        retry_border: float | None = None,
    ) -> MtcnnDetector:
        """A detector with the same compiled (and warmed) networks and other options."""
        return MtcnnDetector(
            self._stages,
            device=self._device,
            max_side=self._max_side if max_side is None else max_side,
            min_face_size=self._min_face_size if min_face_size is None else min_face_size,
            confidence=self._confidence if confidence is None else confidence,
            max_faces=self._max_faces if max_faces is None else max_faces,
            retry_border=self._retry_border if retry_border is None else retry_border,
        )

    @property
    def device(self) -> str:
        """The TensorFlow device the networks run on."""
        return self._device

    @property
    def max_side(self) -> int:
        """The longest side (px) of the copy P-Net's pyramid runs on."""
        return self._max_side

    @property
    def template(self) -> np.ndarray:
        """Where MTCNN puts the landmarks in a UTKFace chip: `TEMPLATE`."""
        return TEMPLATE

    def info(self) -> DetectorInfo:
        """MTCNN, the mtcnn wheel's weights, TensorFlow on the models' device, and settings."""
        from facedemo.schemas import ConfidenceFloor, DetectorInfo

        return DetectorInfo(
            name="mtcnn",
            network="MTCNN (P-Net, R-Net, O-Net; Zhang et al. 2016)",
            package="mtcnn",
            version=importlib.metadata.version("mtcnn"),
            license="MIT",
            runtime=f"TensorFlow {tf.__version__}",
            device=self._device,
            max_side=self._max_side,
            min_face_size=self._min_face_size,
            confidence=[ConfidenceFloor(min_side=0, confidence=self._confidence)],
        )

    def model_ref(self) -> ModelRef:
        """ "mtcnn" and the mtcnn wheel's version."""
        from facedemo.schemas import ModelRef

        return ModelRef(name="mtcnn", version=importlib.metadata.version("mtcnn"))

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in an RGB uint8 image (height, width, 3), largest box first; [] if none.

        Boxes and landmarks are in pixels of `image`; at most `max_faces` faces are returned.
        """
        check_image(image)
        boxes, landmarks = self._find(image)
        if not len(boxes) and self._retry_border > 0:
            boxes, landmarks = self._find_with_border(image)
        return detections_in(image, boxes, landmarks, self._max_faces)

    def _find(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The three stages on `image`: boxes (n, 5) x1, y1, x2, y2, score, not clipped to the
        image, and landmarks (n, 5, 2); n may be 0."""
        height, width = image.shape[:2]
        small = shrink(image, self._max_side)
        small_height, small_width = small.shape[:2]
        nothing = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        with tf.device(self._device):
            shrunk = tf.convert_to_tensor(small)
            boxes = self._propose(shrunk, small_height, small_width)
            if not len(boxes):
                return nothing
            # R-Net and O-Net look at the full-resolution pixels, as in the stock package: only
            # P-Net's pyramid, most of the work, runs on the shrunk copy.
            stretch = np.array([width / small_width, height / small_height])
            boxes[:, :4] *= np.tile(stretch, 2)
            pixels = shrunk if small is image else tf.convert_to_tensor(image)
            boxes = self._refine(pixels, _square(boxes), height, width)
            if not len(boxes):
                return nothing
            return self._output(pixels, boxes, height, width)

    def _find_with_border(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_find` on a copy shrunk to `max_side` and framed by `retry_border` of repeated edge
        pixels, with boxes and landmarks in pixels of `image` (they may reach outside it)."""
        small = shrink(image, self._max_side)
        with_border, border = framed(small, self._retry_border)
        boxes, landmarks = self._find(with_border)
        stretch = np.array(
            [image.shape[1] / small.shape[1], image.shape[0] / small.shape[0]], np.float32
        )
        boxes[:, :4] = (boxes[:, :4] - border) * np.tile(stretch, 2)
        return boxes, (landmarks - border) * stretch

    def _propose(self, pixels: tf.Tensor, height: int, width: int) -> np.ndarray:
        """P-Net over the pyramid: candidate boxes (n, 5) x1, y1, x2, y2, score."""
        found = []
        for scale in pyramid_scales(min(height, width), self._min_face_size):
            level_height, level_width = int(height * scale), int(width * scale)
            padded = [_round_up(level_height, LEVEL_BUCKET), _round_up(level_width, LEVEL_BUCKET)]
            offsets, probabilities = self._stages.propose(
                pixels,
                tf.constant([level_height, level_width], tf.int32),
                tf.constant(padded, tf.int32),
            )
            # Cells of the padding are dropped: only windows inside the level are real.
            rows, columns = _pnet_output_size(level_height), _pnet_output_size(level_width)
            probability = probabilities.numpy()[:rows, :columns]
            ys, xs = np.nonzero(probability > PNET_THRESHOLD)
            if not len(ys):
                continue
            offset = offsets.numpy()[ys, xs]
            # The cell's window spans pixels stride * i + 1 .. stride * i + 12 of the level, and
            # the offsets are fractions of its 11 px extent (the reference implementation's
            # convention, which the weights were trained with).
            window = np.stack([xs, ys, xs, ys], axis=1) * PNET_STRIDE + np.array(
                [1, 1, PNET_WINDOW, PNET_WINDOW]
            )
            level_boxes = (window + offset * (PNET_WINDOW - 1)) / np.array(
                [level_width / width, level_height / height] * 2
            )
            level = np.column_stack([level_boxes, probability[ys, xs]])
            found.append(level[non_maximum_suppression(level, PNET_LEVEL_OVERLAP)])
        if not found:
            return np.empty((0, 5))
        boxes = np.concatenate(found)
        return boxes[non_maximum_suppression(boxes, PNET_OVERLAP)]

    def _refine(self, pixels: tf.Tensor, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """R-Net on every candidate at once: fewer, better square boxes."""
        offsets, probabilities = _run_on_crops(
            self._stages.refine, pixels, boxes, height, width, REFINE_BATCH_SIZES
        )
        boxes = np.column_stack([_shift(boxes, offsets), probabilities])
        boxes = boxes[probabilities > RNET_THRESHOLD]
        return _square(boxes[non_maximum_suppression(boxes, RNET_OVERLAP)])

    def _output(
        self, pixels: tf.Tensor, boxes: np.ndarray, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """O-Net on every box at once: final boxes (n, 5) and landmarks (n, 5, 2)."""
        offsets, marks, probabilities = _run_on_crops(
            self._stages.output, pixels, boxes, height, width, OUTPUT_BATCH_SIZES
        )
        sizes = boxes[:, 2:4] - boxes[:, 0:2] + 1
        # O-Net gives x1..x5 then y1..y5 as fractions of the (pre-regression) box.
        landmarks = np.stack([marks[:, :5], marks[:, 5:]], axis=2) * sizes[:, None, :]
        landmarks += boxes[:, None, 0:2] - 1
        boxes = np.column_stack([_shift(boxes, offsets), probabilities])
        keep = probabilities >= self._confidence
        boxes, landmarks = boxes[keep], landmarks[keep]
        keep = non_maximum_suppression(boxes, ONET_OVERLAP, method="min")
        return boxes[keep], landmarks[keep]

    def _warm_up(self) -> None:
        """Trace every stage and run every crop batch size once, so the first request is fast."""
        # A square photo at the working size walks P-Net over a whole pyramid of level shapes.
        side = self._max_side
        self.detect(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))
        with tf.device(self._device):
            pixels = tf.zeros((ONET_SIZE, ONET_SIZE, 3), tf.uint8)
            for stage, sizes in (
                (self._stages.refine, REFINE_BATCH_SIZES),
                (self._stages.output, OUTPUT_BATCH_SIZES),
            ):
                for batch_size in sizes:
                    stage(pixels, tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [batch_size, 1]))


def pyramid_scales(min_side: int, min_face_size: int) -> list[float]:
    """Scales of the P-Net pyramid: a `min_face_size` face becomes P-Net's 12 px window at the
    first, and the last keeps the image's short side at 12 px or more."""
    scales = []
    scale = PNET_WINDOW / min_face_size
    while min_side * scale >= PNET_WINDOW:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales


# ----------------------------------------------------------------------------- helpers


def _network(network_class: type[Any], weights_file: str) -> Any:
    """A Keras MTCNN network with the weights the `mtcnn` wheel installed next to its code."""
    # Read from the package folder only: the stock loader first tries the same name relative to
    # the working directory. joblib unpickles; these files are as trusted as the package's code.
    path = importlib.resources.files(WEIGHTS_PACKAGE) / weights_file
    with importlib.resources.as_file(path) as weights_path:
        weights = joblib.load(weights_path)
    network = network_class()
    network.build()
    network.set_weights(weights)
    for name, layer in list(vars(network).items()):
        if isinstance(layer, keras.layers.PReLU) and _PReLUAsMaximum.fits(layer):
            setattr(network, name, _PReLUAsMaximum(layer))
    return network


class _PReLUAsMaximum:
    """A PReLU layer whose slopes are all at most 1, computed as max(x, slope * x).

    For such slopes that is the same function, and bit for bit the same floats as Keras'
    relu(x) + -slope * relu(-x), in two passes over the tensor instead of five: the PReLUs of
    these small networks cost as much as their convolutions (bench/README.md, "Tail latency and
    photos"). A layer with a slope above 1 (two of the twelve) keeps Keras' formula.
    """

    def __init__(self, layer: keras.layers.PReLU) -> None:
        self._slopes = tf.constant(layer.get_weights()[0])

    @staticmethod
    def fits(layer: keras.layers.PReLU) -> bool:
        """Whether every slope of `layer` is at most 1."""
        return bool(np.max(layer.get_weights()[0]) <= 1.0)

    def __call__(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.maximum(inputs, self._slopes * inputs)


def _compile_stages(pnet: Any, rnet: Any, onet: Any) -> _Stages:
    image_spec = tf.TensorSpec((None, None, 3), tf.uint8)
    size_spec = tf.TensorSpec((2,), tf.int32)
    boxes_spec = tf.TensorSpec((None, 4), tf.float32)

    @tf.function(input_signature=[image_spec, size_spec, size_spec])
    def propose(pixels: tf.Tensor, size: tf.Tensor, padded: tf.Tensor) -> tuple[tf.Tensor, ...]:
        level = _normalise(tf.image.resize(pixels[None], size, method="area"))
        padding = padded - size
        level = tf.pad(level, [[0, 0], [0, padding[0]], [0, padding[1]], [0, 0]])
        offsets, probabilities = pnet(level, training=False)
        return offsets[0], probabilities[0, :, :, 1]

    @tf.function(input_signature=[image_spec, boxes_spec])
    def refine(pixels: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, ...]:
        offsets, probabilities = rnet(_crops(pixels, boxes, RNET_SIZE), training=False)
        return offsets, probabilities[:, 1]

    @tf.function(input_signature=[image_spec, boxes_spec])
    def output(pixels: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, ...]:
        offsets, landmarks, probabilities = onet(_crops(pixels, boxes, ONET_SIZE), training=False)
        return offsets, landmarks, probabilities[:, 1]

    return _Stages(propose=propose, refine=refine, output=output)


def _normalise(pixels: tf.Tensor) -> tf.Tensor:
    return (pixels - 127.5) / 128.0


def _crops(pixels: tf.Tensor, boxes: tf.Tensor, side: int) -> tf.Tensor:
    """Crops of `boxes` (fractions y1, x1, y2, x2) resized to side x side, then normalised."""
    # Cropping the uint8 image and normalising only the crops is the same arithmetic (bilinear
    # is linear) without a float copy of the whole image. Outside the image the crop is mid
    # grey (0 once normalised), as in the stock package.
    indices = tf.zeros(tf.shape(boxes)[:1], tf.int32)
    crops = tf.image.crop_and_resize(
        pixels[None], boxes, indices, (side, side), extrapolation_value=127.5
    )
    return _normalise(crops)


def _run_on_crops(
    function: CropFunction,
    pixels: tf.Tensor,
    boxes: np.ndarray,
    height: int,
    width: int,
    batch_sizes: tuple[int, ...],
) -> list[np.ndarray]:
    """Run a crop stage on all `boxes` in batches padded to `batch_sizes`; outputs by row."""
    # Boxes as fractions of the width and height, as the stock package computes them, so that a
    # box gets the same crop and the same scores as there.
    extent = np.array([height, width] * 2, np.float64)
    normalised = (boxes[:, [1, 0, 3, 2]] / extent).astype(np.float32)
    largest = batch_sizes[-1]
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(normalised), largest):
        chunk = normalised[start : start + largest]
        padded = next(size for size in batch_sizes if size >= len(chunk))
        batch = np.zeros((padded, 4), np.float32)
        batch[: len(chunk)] = chunk
        outputs = function(pixels, tf.constant(batch))
        chunks.append([output.numpy()[: len(chunk)].astype(np.float64) for output in outputs])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _shift(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply a stage's box regression (fractions of the box size) to boxes x1, y1, x2, y2."""
    sizes = boxes[:, 2:4] - boxes[:, 0:2] + 1
    return boxes[:, :4] + offsets * np.tile(sizes, 2)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box (x1, y1, x2, y2, score) to a square around the same centre."""
    squared = boxes.copy()
    sizes = boxes[:, 2:4] - boxes[:, 0:2]
    side = sizes.max(axis=1, keepdims=True)
    squared[:, 0:2] = boxes[:, 0:2] + sizes / 2 - side / 2
    squared[:, 2:4] = squared[:, 0:2] + side
    return squared


def _pnet_output_size(side: int) -> int:
    """Rows (or columns) of P-Net's map of a level: conv 3, pool 2 ('same'), conv 3, conv 3."""
    return max(0, math.ceil((side - 2) / 2) - 4)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
