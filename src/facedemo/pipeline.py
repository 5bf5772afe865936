"""Image bytes -> faces -> predictions. Knows no HTTP: the API and the CLI both call it.

`Pipeline.predict_image` decodes an upload safely, finds the face crops (for `DetectMode.SKIP`
the whole image is one face), runs every crop through the registry in one batch and assembles one
`Face` per face. `Pipeline.predict_images` does the same for several images with one
registry call over all their faces. Both are synchronous and CPU/GPU bound.

The answers are the API's own types (schemas.py): an image's answer is the `PredictResponse`
that POST /predict sends, so one type goes from the models to the JSON.

The steps are public for callers that schedule them themselves (serving.py, `facedemo
evaluate`): `price` (the header only: what decoding will cost), `locate` (decode and find the
faces), `crops` (the models' input) and `results` (the models' output as per-face answers).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facedemo.age_distribution import probability_over
from facedemo.alignment import align_face
from facedemo.config import Settings
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import FacedemoError, InputError
from facedemo.imaging import (
    ImagePrice,
    ReducedImage,
    decode_image,
    decode_reduced,
    price_image,
    resize_rgb,
)
from facedemo.manifest import AGE_BUCKET_LABELS, GENDER_LABELS
from facedemo.schemas import (
    AgeEstimate,
    AgeInterval,
    Box,
    DetectorInfo,
    Face,
    GenderEstimate,
    GenderProbabilities,
    ImageSize,
    Landmarks,
    ModelRef,
    Point,
    PredictResponse,
    Timings,
)

if TYPE_CHECKING:
    # Only for type hints: importing the registry imports TensorFlow, which `facedemo --help` and
    # the schemas should not pay for.
    from facedemo.batching import BatchingPredictor
    from facedemo.detection import Detection, FaceDetector
    from facedemo.head_combination import FacePredictions
    from facedemo.registry import Registry

# Probabilities are reported to 4 decimals, ages and intervals to 1: more digits are noise.
PROBABILITY_DIGITS = 4
YEARS_DIGITS = 1
MILLISECONDS_DIGITS = 2
# A JPEG may be decoded for detection at a DCT scale whose longer side is this share of the
# detector's max_side or more (see `Pipeline._reduced_side`).
REDUCED_DECODE_SHARE = 0.9


class WorkStopped(Exception):
    """`locate` was asked to stop (its caller is gone): raised between two steps of the work."""


@dataclass(frozen=True)
class FaceRegion:
    """A located face: where it is, and its crop at the models' input size."""

    box: Box
    crop: np.ndarray  # uint8 (height, width, 3) at Registry.input_size
    detection_confidence: float | None = None
    landmarks: Landmarks | None = None


@dataclass(frozen=True)
class LocatedImage:
    """A decoded image's size and its located faces, before the models have run."""

    image: ImageSize
    regions: list[FaceRegion]
    detect: DetectMode  # how the faces were located
    decode_ms: float = 0.0
    detect_ms: float = 0.0


class Pipeline:
    """Turns image bytes into per-face age and gender predictions with one registry."""

    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        detector: FaceDetector | None = None,
        batcher: BatchingPredictor | None = None,
    ) -> None:
        """Use `registry`'s models; `settings` gives the image limits; `detector` finds faces.

        Without a detector only `DetectMode.SKIP` works. With a `batcher` (over `registry`) the
        synchronous calls share model calls with concurrent callers.
        """
        self._registry = registry
        self._settings = settings
        self._detector = detector
        self._batcher = batcher
        self._models = [
            ModelRef(name=name, version=manifest.version)
            for name, manifest in sorted(registry.manifests().items())
        ]
        # Read once: the versions come from the installed packages' metadata.
        self._detector_ref = None if detector is None else detector.model_ref()
        self._detector_info = None if detector is None else detector.info()

    def detector_info(self) -> DetectorInfo | None:
        """The face detector of `DetectMode.AUTO` and its settings; None without one."""
        return self._detector_info

    def models_for(self, detect: DetectMode) -> list[ModelRef]:
        """Names and versions of the models that answer for `detect`: the registry's models,
        and the face detector when `detect` runs it."""
        if detect is DetectMode.AUTO and self._detector_ref is not None:
            return [*self._models, self._detector_ref]
        return list(self._models)

    def predict_image(
        self,
        data: bytes,
        detect: DetectMode = DEFAULT_DETECT_MODE,
        age_thresholds: Sequence[int] | None = None,
    ) -> PredictResponse:
        """Decode `data`, locate faces as `detect` says, and predict age and gender for each.

        Each face's `age.over` holds P(age >= T) for each of `age_thresholds` (default: the
        age_thresholds setting). Raises the imaging errors (ImageDecodeError,
        UnsupportedImageFormat, ImageTooLarge) for bad bytes; no face found is an empty `faces`
        list, not an error.
        """
        [prediction] = self._predict_all([self.locate(data, detect)], age_thresholds)
        return prediction

    def predict_images(
        self,
        images: Sequence[bytes],
        detect: DetectMode = DEFAULT_DETECT_MODE,
        age_thresholds: Sequence[int] | None = None,
    ) -> list[PredictResponse | FacedemoError]:
        """Predict several images with one registry call over all their faces, in input order.

        An image with bad bytes gets its input error (ImageDecodeError, ...) in its place instead
        of failing the others. Each image's `inference` timing is the one shared model call.
        """
        outcomes = self._locate_each(images, detect)
        answers = self._predict_all(_located_only(outcomes), age_thresholds)
        return _in_input_order(outcomes, answers)

    def price(self, data: bytes, detect: DetectMode = DEFAULT_DETECT_MODE) -> ImagePrice:
        """What decoding `data` for `detect` will cost, from its header alone.

        Raises the imaging errors `locate` would for a bad header, ImageTooLarge and
        ImageTooExpensive included, without decoding a pixel.
        """
        return price_image(
            data,
            max_pixels=self._settings.max_image_pixels,
            max_decode_bytes=self._settings.max_decode_bytes,
            longest_side=self._reduced_side(detect),
        )

    def locate(
        self,
        data: bytes,
        detect: DetectMode = DEFAULT_DETECT_MODE,
        stop: threading.Event | None = None,
    ) -> LocatedImage:
        """Decode `data` and locate its faces as `detect` says, without running the models.

        With `predict_located` this is `predict_image` split in two, so that a caller holding many
        images (`facedemo evaluate`) can batch the model calls; it raises the same imaging errors.
        Once `stop` is set, WorkStopped is raised before detection instead of running it.
        """
        started = time.perf_counter()
        limits = {
            "max_pixels": self._settings.max_image_pixels,
            "max_decode_bytes": self._settings.max_decode_bytes,
        }
        longest_side = self._reduced_side(detect)
        if longest_side is not None:
            image = decode_reduced(data, longest_side=longest_side, **limits)
        else:
            image = _whole(decode_image(data, **limits))
        if stop is not None and stop.is_set():
            raise WorkStopped("stopped after decoding")
        decoded = time.perf_counter()
        regions = self._locate_faces(image, detect)
        located = time.perf_counter()
        return LocatedImage(
            image=ImageSize(width=image.width, height=image.height),
            regions=regions,
            decode_ms=_milliseconds(decoded - started),
            detect_ms=_milliseconds(located - decoded),
            detect=detect,
        )

    def _reduced_side(self, detect: DetectMode) -> int | None:
        """The longest side a JPEG may be decoded at for `detect`; None: decode it whole."""
        # The detector shrinks the image to its max_side, and the face crops are 64 px: a JPEG
        # decoded at a reduced scale serves both, in a fraction of the time. A scale that leaves
        # a little less than max_side is taken too: a 1,920-px photo then decodes at 960 px
        # instead of whole, in about a quarter of the time, for faces detected 6% smaller
        # (bench/README.md, "Against peers").
        if detect is DetectMode.AUTO and self._detector is not None:
            return math.ceil(self._detector.max_side * REDUCED_DECODE_SHARE)
        return None

    def predict_located(
        self, images: Sequence[LocatedImage], age_thresholds: Sequence[int] | None = None
    ) -> list[list[Face]]:
        """Predict every face of several located images in one registry call; a list per image."""
        return self._faces(images, self.predict_crops(self.crops(images)), age_thresholds)

    def predict_crops(self, crops: np.ndarray) -> FacePredictions:
        """The models' predictions for `crops`, through the batcher if there is one."""
        predictor: Registry | BatchingPredictor = self._batcher or self._registry
        return predictor.predict(crops)

    def _locate_each(
        self, images: Sequence[bytes], detect: DetectMode
    ) -> list[LocatedImage | FacedemoError]:
        """`locate` for each image, with an input error in the place of a bad one."""
        outcomes: list[LocatedImage | FacedemoError] = []
        for data in images:
            try:
                outcomes.append(self.locate(data, detect))
            except InputError as error:
                outcomes.append(error)
        return outcomes

    def crops(self, images: Sequence[LocatedImage]) -> np.ndarray:
        """Every face crop of `images`, in order, as one uint8 array (n, height, width, 3)."""
        regions = [region for image in images for region in image.regions]
        if regions:
            return np.stack([region.crop for region in regions])
        return np.zeros((0, *self._registry.input_size, 3), dtype=np.uint8)

    def _faces(
        self,
        images: Sequence[LocatedImage],
        predictions: FacePredictions,
        age_thresholds: Sequence[int] | None,
    ) -> list[list[Face]]:
        """The rows of `predictions` (one per crop of `images`) as results, a list per image."""
        regions = [region for image in images for region in image.regions]
        thresholds = self._settings.age_thresholds if age_thresholds is None else age_thresholds
        over = probability_over(predictions.age_distribution, thresholds)
        over_labels = tuple(str(threshold) for threshold in thresholds)
        faces = [
            _face_result(region, predictions, row, _labelled(over_labels, over[row]))
            for row, region in enumerate(regions)
        ]
        per_image: list[list[Face]] = []
        start = 0
        for image in images:
            per_image.append(faces[start : start + len(image.regions)])
            start += len(image.regions)
        return per_image

    def _predict_all(
        self, images: Sequence[LocatedImage], age_thresholds: Sequence[int] | None
    ) -> list[PredictResponse]:
        """`predict_located` with each image's size and timings: the answers of predict_image(s)."""
        started = time.perf_counter()
        faces_per_image = self.predict_located(images, age_thresholds)
        return self._answers(images, faces_per_image, time.perf_counter() - started)

    def results(
        self,
        images: Sequence[LocatedImage],
        predictions: FacePredictions,
        inference_seconds: float,
        age_thresholds: Sequence[int] | None = None,
    ) -> list[PredictResponse]:
        """Each image's prediction from the models' `predictions` for `crops(images)`, with the
        one model call's `inference_seconds` as every image's inference time."""
        faces = self._faces(images, predictions, age_thresholds)
        return self._answers(images, faces, inference_seconds)

    def _answers(
        self,
        images: Sequence[LocatedImage],
        faces_per_image: Sequence[list[Face]],
        inference_seconds: float,
    ) -> list[PredictResponse]:
        """Each image's prediction, with the one model call's time as its inference time."""
        inference_ms = _milliseconds(inference_seconds)
        return [
            PredictResponse(
                models=self.models_for(image.detect),
                image=image.image,
                faces=faces,
                timings_ms=Timings(
                    decode=image.decode_ms,
                    detect=image.detect_ms,
                    inference=inference_ms,
                    total=round(
                        image.decode_ms + image.detect_ms + inference_ms, MILLISECONDS_DIGITS
                    ),
                ),
            )
            for image, faces in zip(images, faces_per_image, strict=True)
        ]

    def _locate_faces(self, image: ReducedImage, detect: DetectMode) -> list[FaceRegion]:
        """The faces in a decoded image, each with its crop at the models' input size; boxes and
        landmarks in pixels of the whole image."""
        if detect is DetectMode.SKIP:
            return [
                FaceRegion(
                    box=Box(x=0, y=0, width=image.width, height=image.height),
                    crop=resize_rgb(image.pixels, self._registry.input_size),
                )
            ]
        if detect is DetectMode.AUTO:
            if self._detector is None:
                raise ValueError("detect=auto needs a Pipeline built with a detector")
            # The detector returns the largest faces first, at most max_faces_per_image of them.
            template = self._detector.template
            return [
                _detected_region(image, detection, template, self._registry.input_size)
                for detection in self._detector.detect(image.pixels)
            ]
        raise ValueError(f"unsupported detect mode {detect!r}")


def _located_only(outcomes: Sequence[LocatedImage | FacedemoError]) -> list[LocatedImage]:
    return [item for item in outcomes if isinstance(item, LocatedImage)]


def _in_input_order(
    outcomes: Sequence[LocatedImage | FacedemoError], predictions: Sequence[PredictResponse]
) -> list[PredictResponse | FacedemoError]:
    """Each located image's prediction (in `predictions`, in order) or its error, as `outcomes`."""
    answers = iter(predictions)
    return [item if isinstance(item, FacedemoError) else next(answers) for item in outcomes]


def _whole(pixels: np.ndarray) -> ReducedImage:
    """A decoded image that was not reduced."""
    return ReducedImage(pixels=pixels, width=int(pixels.shape[1]), height=int(pixels.shape[0]))


def _detected_region(
    image: ReducedImage, detection: Detection, template: np.ndarray, input_size: tuple[int, int]
) -> FaceRegion:
    """A detection in `image.pixels` as a face region: its crop is cut from those pixels, its box
    and landmarks are in pixels of the whole image."""
    width, height = image.width, image.height
    scale_x, scale_y = image.scale
    x1, y1, x2, y2 = np.array(detection.box) * [scale_x, scale_y, scale_x, scale_y]
    left, top = min(round(x1), width - 1), min(round(y1), height - 1)
    right, bottom = max(round(x2), left + 1), max(round(y2), top + 1)
    left_eye, right_eye, nose, mouth_left, mouth_right = (
        Point(x=round(float(x), 1), y=round(float(y), 1))
        for x, y in detection.landmarks * [scale_x, scale_y]
    )
    return FaceRegion(
        box=Box(x=left, y=top, width=min(right, width) - left, height=min(bottom, height) - top),
        crop=align_face(image.pixels, detection.landmarks, template, input_size),
        detection_confidence=round(detection.confidence, PROBABILITY_DIGITS),
        landmarks=Landmarks(
            left_eye=left_eye,
            right_eye=right_eye,
            nose=nose,
            mouth_left=mouth_left,
            mouth_right=mouth_right,
        ),
    )


def _face_result(
    region: FaceRegion, predictions: FacePredictions, row: int, over: dict[str, float]
) -> Face:
    buckets = predictions.bucket_probabilities[row]
    genders = predictions.gender_probabilities[row]
    gender_index = int(np.argmax(genders))
    low, high = predictions.age_interval[row]
    return Face(
        box=region.box,
        detection_confidence=region.detection_confidence,
        landmarks=region.landmarks,
        age=AgeEstimate(
            years=round(float(predictions.age_years[row]), YEARS_DIGITS),
            interval=AgeInterval(
                low=round(float(low), YEARS_DIGITS),
                high=round(float(high), YEARS_DIGITS),
                level=float(predictions.interval_level),
            ),
            bucket=AGE_BUCKET_LABELS[int(np.argmax(buckets))],
            bucket_probabilities=_labelled(AGE_BUCKET_LABELS, buckets),
            over=over,
        ),
        gender=GenderEstimate(
            label=GENDER_LABELS[gender_index],
            confidence=round(float(genders[gender_index]), PROBABILITY_DIGITS),
            probabilities=GenderProbabilities(**_labelled(GENDER_LABELS, genders)),
        ),
    )


def _labelled(labels: tuple[str, ...], probabilities: np.ndarray) -> dict[str, float]:
    return {
        label: round(float(probability), PROBABILITY_DIGITS)
        for label, probability in zip(labels, probabilities, strict=True)
    }


def _milliseconds(seconds: float) -> float:
    return round(seconds * 1000.0, MILLISECONDS_DIGITS)
