"""POST /predict/batch: age and gender for the faces of several images, and a crowd summary."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile

from facedemo.api.deps import MetricsDep, RequestContextDep, ServingDep, SettingsDep
from facedemo.api.disconnects import cancel_on_disconnect
from facedemo.api.problems import problem_for, problem_responses
from facedemo.api.routes.predict import AgeOverQuery, read_upload, requested_thresholds
from facedemo.api.routing import DocumentedRoute
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import FacedemoError, InputError, TooManyFiles
from facedemo.schemas import BatchPredictResponse, PredictResponse, Problem

router = APIRouter(
    prefix="/predict",
    tags=["predict"],
    responses=problem_responses(422, 500, 503),
    route_class=DocumentedRoute,
)

# Whole-request errors only: a bad image is answered in its own item, not with 400/415.
BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The multipart body cannot be parsed."},
    413: {
        "model": Problem,
        "description": "More files than FACEDEMO_MAX_BATCH_IMAGES (default 32; code "
        "too_many_files, no image is read), or a body larger than that many uploads.",
    },
    415: {"model": Problem, "description": "The body is not multipart/form-data."},
}


@router.post("/batch", response_model=BatchPredictResponse, responses=BATCH_ERRORS)
async def predict_batch(
    files: Annotated[
        list[UploadFile],
        File(description="The images, each one a repeated multipart field `files`."),
    ],
    serving: ServingDep,
    settings: SettingsDep,
    context: RequestContextDep,
    metrics: MetricsDep,
    request: Request,
    detect: Annotated[
        DetectMode, Query(description="How to find faces in each image, as for POST /predict.")
    ] = DEFAULT_DETECT_MODE,
    age_over: AgeOverQuery = None,
) -> BatchPredictResponse:
    """Estimate age and gender for the faces in several images, with a crowd summary.

    Send up to `FACEDEMO_MAX_BATCH_IMAGES` (default 32) images as repeated multipart fields
    `files`. `items` answers each file in upload order: what POST /predict gives for it (image
    size, faces, timings) with its `index` and `filename`, or its `error` as problem details
    (unreadable image, over the byte limit, ...) without failing the other files. `summary`
    covers every face of the predicted images: count, mean and median age, gender shares and the
    age bucket histogram. The models see all faces of all images in one batch.
    """
    if len(files) > settings.max_batch_images:
        raise TooManyFiles(
            f"{len(files)} files sent; at most {settings.max_batch_images} are accepted per batch"
        )
    uploads: list[bytes | FacedemoError] = []
    for file in files:
        try:
            uploads.append(await read_upload(file, settings.max_upload_bytes))
        except InputError as error:  # over the byte limit, ...: this file's problem only
            uploads.append(error)
    images = [upload for upload in uploads if isinstance(upload, bytes)]
    thresholds = requested_thresholds(age_over)
    predictions = iter(
        await cancel_on_disconnect(request, serving.predict_images(images, detect, thresholds))
    )
    outcomes: list[tuple[str | None, PredictResponse | Problem]] = []
    for file, upload in zip(files, uploads, strict=True):
        outcome = upload if isinstance(upload, FacedemoError) else next(predictions)
        if isinstance(outcome, FacedemoError):
            outcomes.append((file.filename, problem_for(outcome, instance=request.url.path)))
        else:
            outcomes.append((file.filename, outcome))
    response = BatchPredictResponse.from_outcomes(
        serving.pipeline.models_for(detect), outcomes, request_id=context.request_id
    )
    context.faces = response.summary.faces
    metrics.observe_faces(
        len(outcome.faces) for _, outcome in outcomes if not isinstance(outcome, Problem)
    )
    return response
