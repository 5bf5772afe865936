"""POST /predict: age and gender for the faces in one uploaded image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import Field

from facedemo.age_thresholds import MAX_THRESHOLD, MAX_THRESHOLDS, MIN_THRESHOLD, thresholds_from
from facedemo.api.deps import MetricsDep, RequestContextDep, ServingDep, SettingsDep
from facedemo.api.disconnects import cancel_on_disconnect
from facedemo.api.problems import problem_responses
from facedemo.api.routing import DocumentedRoute
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import UploadTooLarge
from facedemo.imaging import ACCEPTED_FORMAT_NAMES
from facedemo.schemas import PredictResponse

# ?age_over=18&age_over=21: the thresholds T of this request's `age.over` (P(age >= T)).
AgeOverQuery = Annotated[
    list[Annotated[int, Field(ge=MIN_THRESHOLD, le=MAX_THRESHOLD)]] | None,
    Query(
        max_length=MAX_THRESHOLDS,
        description="Age checks: each face's `age.over` gives P(age >= T) for each T sent "
        f"(repeat the parameter, whole years {MIN_THRESHOLD}-{MAX_THRESHOLD}, at most "
        f"{MAX_THRESHOLDS}), e.g. `?age_over=18&age_over=21`; unset: FACEDEMO_AGE_THRESHOLDS "
        "(13, 16, 18, 21 and 25 by default).",
    ),
]


def requested_thresholds(age_over: list[int] | None) -> tuple[int, ...] | None:
    """The request's thresholds, distinct and rising; None: the configured ones."""
    return None if age_over is None else thresholds_from(age_over)


router = APIRouter(
    prefix="/predict",
    tags=["predict"],
    responses=problem_responses(400, 413, 415, 422, 500, 503),
    route_class=DocumentedRoute,
)


@router.post("", response_model=PredictResponse)
async def predict(
    file: Annotated[UploadFile, File(description=f"One image: {ACCEPTED_FORMAT_NAMES}.")],
    serving: ServingDep,
    settings: SettingsDep,
    context: RequestContextDep,
    metrics: MetricsDep,
    request: Request,
    detect: Annotated[
        DetectMode,
        Query(description="How to find faces. `skip`: the image is one face crop, use all of it."),
    ] = DEFAULT_DETECT_MODE,
    age_over: AgeOverQuery = None,
) -> PredictResponse:
    """Estimate age and gender for the faces in one image.

    Send the image as the multipart field `file`. Each face gets its box in pixels of the
    (EXIF-rotated) image, an age in years with an interval and an age bucket, and a gender with
    both probabilities; `age.over` answers age checks ("at least T years old?") as
    probabilities, for the thresholds of `age_over`. The upload is kept in memory only and
    dropped after the response.
    """
    data = await read_upload(file, settings.max_upload_bytes)
    prediction = await cancel_on_disconnect(
        request, serving.predict_image(data, detect, requested_thresholds(age_over))
    )
    context.faces = len(prediction.faces)
    metrics.observe_faces([context.faces])
    return prediction.model_copy(update={"request_id": context.request_id})


async def read_upload(file: UploadFile, max_bytes: int) -> bytes:
    """The upload's bytes; UploadTooLarge if there are more than `max_bytes`.

    The part is closed once read, so that the upload is not held twice (its spooled copy and
    these bytes) while the request runs.
    """
    try:
        data = await file.read(max_bytes + 1)
    finally:
        await file.close()
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the upload is larger than the limit of {max_bytes} bytes")
    return data
