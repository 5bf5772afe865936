"""The one place that turns errors into HTTP answers: RFC 9457 application/problem+json.

- `FacedemoError` (errors.py) -> the status `STATUS_OF_ERRORS` gives its class, its title and
  code; type PROBLEM_TYPE_BASE + code; a `Retry-After` header when the error has a
  `retry_after` (overloaded, deadline_exceeded).
- `RequestValidationError` -> 422, code "validation_error", with the invalid parts in `errors`.
- Starlette's `HTTPException` (unknown route, wrong method, ...) -> its status, type about:blank.
- Starlette's `ClientDisconnect` (the client went away) -> 499, which only the metrics and the
  access line see: not a server error, and no traceback.
- Anything else -> 500, code "internal_error", logged with its traceback and never shown.

Routers document these with `problem_responses(...)`, and `install_problem_handlers` moves them
to the application/problem+json media type in the OpenAPI document.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from facedemo.errors import (
    AuthenticationError,
    BundleError,
    DeviceUnavailableError,
    FacedemoError,
    ImageTooExpensive,
    ImageTooLarge,
    InputError,
    NotReadyError,
    OverloadedError,
    TooManyFiles,
    UnknownModelError,
    UnsupportedImageFormat,
    UnsupportedMediaType,
    UploadTooLarge,
)
from facedemo.imaging import ACCEPTED_FORMAT_NAMES
from facedemo.schemas import PROBLEM_TYPE_BASE, Problem, ValidationIssue

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED_REQUEST = 499

# The HTTP status of each error class; a class not named takes its nearest named base's
# (ImageDecodeError and its kinds, MalformedMultipart: InputError's 400; DeadlineExceededError:
# OverloadedError's 503; ModelError: FacedemoError's 500).
STATUS_OF_ERRORS: Mapping[type[FacedemoError], int] = {
    FacedemoError: 500,
    InputError: 400,
    UnsupportedImageFormat: 415,
    ImageTooLarge: 413,
    ImageTooExpensive: 413,
    UploadTooLarge: 413,
    TooManyFiles: 413,
    UnsupportedMediaType: 415,
    BundleError: 503,
    UnknownModelError: 404,
    DeviceUnavailableError: 503,
    NotReadyError: 503,
    OverloadedError: 503,
    AuthenticationError: 401,
}

_DESCRIPTIONS = {
    400: "The upload is not a readable image (codes image_undecodable, empty_file; "
    "image_truncated when its data stops before the last pixel, image_corrupt when the data is "
    "damaged), or the "
    "multipart body cannot be parsed (malformed_multipart).",
    404: "No such resource; the detail names what exists.",
    413: "Too many bytes (upload_too_large), too many pixels (image_too_large), an image too "
    "expensive to decode (image_too_expensive: pixels times bit depth and bands) or too many "
    "files (too_many_files).",
    415: f"The image is not in an accepted format ({ACCEPTED_FORMAT_NAMES}; "
    "unsupported_image_format), or the body is not multipart/form-data (unsupported_media_type).",
    422: "The request is malformed: a missing field, an invalid parameter, or a query parameter "
    "the route does not take (the detail names those it does).",
    500: "An unexpected error; it is logged, and no details are returned.",
    503: "The models are not loaded yet, or failed to load (not_ready); or the service is full "
    "(overloaded: its queues or its memory budget) or this request's work took too long "
    "(deadline_exceeded), with a Retry-After header.",
}


class ProblemResponse(JSONResponse):
    """A JSON response with the problem+json media type."""

    media_type = PROBLEM_MEDIA_TYPE


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> ProblemResponse:
    """Serialise a problem; members without a value are left out, as RFC 9457 allows."""
    return ProblemResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=problem.status,
        headers=headers,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting each status as a Problem, for routers and routes."""
    return {
        status: {"model": Problem, "description": _DESCRIPTIONS.get(status, _phrase(status))}
        for status in statuses
    }


def status_of(error: FacedemoError) -> int:
    """The HTTP status of `error`: its class's in STATUS_OF_ERRORS, or its nearest base's."""
    return next(STATUS_OF_ERRORS[kind] for kind in type(error).__mro__ if kind in STATUS_OF_ERRORS)


def problem_for(error: FacedemoError, instance: str | None = None) -> Problem:
    """The problem details of a FacedemoError: its status, title and code, and its message.

    The error handler answers with it; the batch route puts it in the failed image's place.
    """
    return Problem(
        type=PROBLEM_TYPE_BASE + error.code,
        title=error.title,
        status=status_of(error),
        detail=error.detail,
        instance=instance,
        code=error.code,
    )


async def _facedemo_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, FacedemoError)
    if status_of(error) == 500:  # 503s (not ready) are expected while loading; 500s need a look
        logger.error("%s %s: %s: %s", request.method, request.url.path, error.code, error.detail)
    headers = None if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return problem_response(problem_for(error, instance=request.url.path), headers=headers)


async def _validation_error(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, RequestValidationError)
    # Only where and why: pydantic's "input" and "ctx" could echo upload bytes back.
    issues = [
        ValidationIssue(loc=list(item.get("loc", ())), msg=item["msg"], type=item["type"])
        for item in error.errors()
    ]
    return problem_response(
        Problem(
            type=PROBLEM_TYPE_BASE + "validation_error",
            title="Request validation failed",
            status=422,
            detail="; ".join(_describe_issue(issue) for issue in issues),
            instance=request.url.path,
            code="validation_error",
            errors=issues,
        )
    )


async def _http_exception(request: Request, error: Exception) -> ProblemResponse:
    assert isinstance(error, StarletteHTTPException)
    phrase = _phrase(error.status_code)
    return problem_response(
        Problem(
            title=phrase,
            status=error.status_code,
            detail=None if error.detail == phrase else str(error.detail),
            instance=request.url.path,
            code=phrase.lower().replace(" ", "_").replace("-", "_"),
        ),
        headers=error.headers,
    )


async def _client_disconnected(request: Request, error: Exception) -> Response:
    # Nobody reads this answer: it exists for the metrics' and the access line's status.
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, error: Exception) -> ProblemResponse:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=error)
    return problem_response(
        Problem(
            type=PROBLEM_TYPE_BASE + "internal_error",
            title="Internal server error",
            status=500,
            detail="an unexpected error occurred; it has been logged",
            instance=request.url.path,
            code="internal_error",
        )
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register every handler above, and serve error responses as problem+json in OpenAPI."""
    app.add_exception_handler(FacedemoError, _facedemo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
    app.openapi = _problem_media_type_openapi(app.openapi)  # type: ignore[method-assign]


def _problem_media_type_openapi(
    build_openapi: Callable[[], dict[str, Any]],
) -> Callable[[], dict[str, Any]]:
    """FastAPI files `responses={... "model": Problem}` under application/json; move them."""

    def openapi() -> dict[str, Any]:
        schema = build_openapi()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    document = content.get("application/json", {})
                    if status[0] in "45" and document.get("schema", {}).get("$ref", "").endswith(
                        "/Problem"
                    ):
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        return schema

    return openapi


def _describe_issue(issue: ValidationIssue) -> str:
    return f"{'.'.join(str(part) for part in issue.loc)}: {issue.msg}"


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
