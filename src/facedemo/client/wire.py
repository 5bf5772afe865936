"""What both clients send and how they read the answer: requests as `Call`s, images as uploads.

`Client` and `AsyncClient` differ only in how they wait; each route is one function here that
returns the `Call` for it, and `read_answer` turns any response into the route's pydantic model
(from `facedemo.schemas`, the server's own) or the exception of `errors.py`.
"""

from __future__ import annotations

import io
import mimetypes
import os
import re
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Generic, TypeGuard, TypeVar, Union
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from facedemo.client.errors import UnexpectedResponseError, problem_error
from facedemo.detect_mode import DetectMode
from facedemo.schemas import (
    BatchPredictResponse,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    Readiness,
)

if TYPE_CHECKING:
    from PIL.Image import Image

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], "Image"]
"""An image to send: a file path, its bytes, a binary file object, or a PIL image (sent as PNG)."""

Answer = TypeVar("Answer", bound=BaseModel)

REQUEST_ID_HEADER = "X-Request-ID"
API_KEY_HEADER = "X-API-Key"
# The ids the service keeps (api/access_log.py); it would replace any other with its own.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class Upload:
    """One image as a multipart file part."""

    filename: str
    content: bytes
    content_type: str

    def part(self) -> tuple[str, bytes, str]:
        """The (filename, content, content type) tuple httpx takes."""
        return (self.filename, self.content, self.content_type)


@dataclass(frozen=True)
class Call(Generic[Answer]):
    """One request to a route and the model its answer is parsed into."""

    method: str
    path: str
    answer: type[Answer]
    params: tuple[tuple[str, str], ...] = ()
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    # False for the readiness probe: a caller asking "ready now?" wants the answer, not a wait.
    retry_when_unavailable: bool = True


def predict_call(
    upload: Upload, detect: str | None, age_over: Iterable[int] | None = None
) -> Call[PredictResponse]:
    """POST /predict with one image."""
    return Call(
        "POST", "/predict", PredictResponse, _query(detect, age_over), [("file", upload.part())]
    )


def predict_batch_call(
    uploads: Iterable[Upload], detect: str | None, age_over: Iterable[int] | None = None
) -> Call[BatchPredictResponse]:
    """POST /predict/batch with the images in order."""
    files = [("files", upload.part()) for upload in uploads]
    if not files:
        raise ValueError("predict_batch needs at least one image")
    return Call("POST", "/predict/batch", BatchPredictResponse, _query(detect, age_over), files)


def models_call() -> Call[ModelsResponse]:
    """GET /models."""
    return Call("GET", "/models", ModelsResponse)


def model_call(name: str) -> Call[ModelInfo]:
    """GET /models/{name}."""
    return Call("GET", f"/models/{quote(name, safe='')}", ModelInfo)


def ready_call() -> Call[Readiness]:
    """GET /readyz, without waiting out a 503."""
    return Call("GET", "/readyz", Readiness, retry_when_unavailable=False)


def _query(detect: str | None, age_over: Iterable[int] | None) -> tuple[tuple[str, str], ...]:
    """The query of a predict call: detect once, age_over once per threshold."""
    if isinstance(detect, DetectMode):  # a str Enum: its value, not its name, goes on the wire
        detect = detect.value
    query = () if detect is None else (("detect", detect),)
    return query + tuple(("age_over", str(int(age))) for age in age_over or ())


def request_headers(request_id: str | None, api_key: str | None) -> dict[str, str]:
    """Headers of one request (all its tries): its id (a fresh one unless given) and the key."""
    if request_id is None:
        request_id = uuid.uuid4().hex
    elif not _VALID_REQUEST_ID.fullmatch(request_id):
        raise ValueError(
            f"request id {request_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
        )
    headers = {REQUEST_ID_HEADER: request_id}
    if api_key is not None:
        headers[API_KEY_HEADER] = api_key
    return headers


def read_answer(call: Call[Answer], response: httpx.Response, request_id: str) -> Answer:
    """The call's model parsed from a 2xx answer; the matching exception for anything else."""
    answered_id = response.headers.get(REQUEST_ID_HEADER, request_id)
    if 400 <= response.status_code <= 599:
        raise problem_error(response, answered_id)
    if not 200 <= response.status_code <= 299:
        raise UnexpectedResponseError(
            f"unexpected status for {call.method} {call.path}", response, answered_id
        )
    try:
        return call.answer.model_validate_json(response.content)
    except ValidationError as error:
        raise UnexpectedResponseError(
            f"the answer to {call.method} {call.path} is not a {call.answer.__name__}: {error}",
            response,
            answered_id,
        ) from None


def upload_of(image: ImageInput) -> Upload:
    """The image as a file part; reads a path or file object, encodes a PIL image as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        return Upload("image", bytes(image), "application/octet-stream")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return Upload(path.name, path.read_bytes(), _content_type(path.name))
    if _is_pil_image(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the service sees the caller's pixels
        return Upload("image.png", buffer.getvalue(), "image/png")
    read = getattr(image, "read", None)
    if callable(read):
        content = read()
        if not isinstance(content, bytes):
            raise TypeError("a file object must be opened in binary mode ('rb')")
        name = os.path.basename(str(getattr(image, "name", "") or "")) or "image"
        return Upload(name, content, _content_type(name))
    raise TypeError(
        f"cannot send a {type(image).__name__} as an image: give a path, bytes, a binary file "
        "object or a PIL image"
    )


def is_in_memory(image: ImageInput) -> bool:
    """Whether turning the image into an upload needs no file reading or encoding."""
    return isinstance(image, bytes | bytearray | memoryview)


def _is_pil_image(image: object) -> TypeGuard[Image]:
    # Pillow is imported only if the caller already has: an image cannot come from it otherwise.
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(image, pil_image.Image)


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
