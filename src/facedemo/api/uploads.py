"""Checks for upload routes that FastAPI does not make before it reads a multipart body.

A route takes uploads when it has File/Form parameters. Before its handler runs:
- the body must be multipart/form-data: anything else (JSON, text, no Content-Type) is a 415
  problem, code `unsupported_media_type`, instead of FastAPI's "field required";
- the body must parse: no boundary, broken framing or a body that ends before its closing
  boundary (`--BOUNDARY--`) is a 400 problem, code `malformed_multipart`, instead of Starlette's
  plain "Bad Request" (or, for a cut-off body, a misleading "field required" for the part it cut);
- a field that takes one file (`file: UploadFile`) must not come twice: that is a 413 problem,
  code `too_many_files`, where FastAPI would silently keep the last one.

The form is parsed here once, by Starlette's parser with the same limits `request.form()` uses;
FastAPI's own `request.form()` then gets the same parsed form.

`document_uploads` states in the OpenAPI document what these checks and the routes enforce, so
that a client or validator generated from it sends nothing the service refuses as a whole: a
single file part is at least one byte (else 400 `empty_file`), a repeated one has at least one
part (else 422) and at most the route's limit (else 413 `too_many_files`), each part is one of the
accepted image types (`imaging.ALLOWED_FORMATS`). The items of a batch may still be empty or
undecodable: the batch answers them one by one, in a 200.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import aclosing
from typing import Any

from fastapi import FastAPI, Request, Response, UploadFile, params
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from facedemo.errors import MalformedMultipart, TooManyFiles, UnsupportedMediaType
from facedemo.imaging import ALLOWED_FORMATS

MULTIPART_MEDIA_TYPE = "multipart/form-data"
# The IANA media type of each accepted Pillow format is image/ and its name: image/jpeg, image/tiff.
IMAGE_MEDIA_TYPES = tuple(f"image/{image_format.lower()}" for image_format in ALLOWED_FORMATS)

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def takes_upload(route: APIRoute) -> bool:
    """Whether the route's body is a form (File or Form parameters)."""
    return route.body_field is not None and isinstance(route.body_field.field_info, params.Form)


def guard_uploads(route: APIRoute, handler: Handler) -> Handler:
    """`handler` behind the checks in the module docstring."""
    single_file_fields = [
        field.alias
        for field in route.dependant.body_params
        if field.field_info.annotation in (UploadFile, StarletteUploadFile)
    ]

    async def guarded(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != MULTIPART_MEDIA_TYPE:
            raise UnsupportedMediaType(
                f"the request body must be {MULTIPART_MEDIA_TYPE}, with the image as a file field"
            )
        form = await parse_form(request)
        for name in single_file_fields:
            count = len(form.getlist(name))
            if count > 1:
                await form.close()
                raise TooManyFiles(f"{count} files in the field {name!r}; this route takes one")
        return await handler(request)

    return guarded


class _ClosedMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, which also notes whether the close delimiter arrived.

    python-multipart reaches its end state (`on_end`) only on `--BOUNDARY--`, but does not complain
    when the body stops before it: the part it was reading is then silently dropped.
    """

    closed = False

    def on_end(self) -> None:
        self.closed = True


async def parse_form(request: Request) -> FormData:
    """The request's multipart form, parsed once and kept where `request.form()` finds it.

    MalformedMultipart if it cannot be parsed or ends before its closing boundary. An empty body
    is left to FastAPI, whose "field required" names what is missing.
    """
    received = 0

    async def counted() -> AsyncGenerator[bytes, None]:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            yield chunk

    async with aclosing(counted()) as stream:
        parser = _ClosedMultiPartParser(request.headers, stream)
        try:
            form = await parser.parse()
        except MultiPartException as error:
            detail = f"the multipart body cannot be parsed: {error.message}"
            raise MalformedMultipart(detail) from None
    if received and not parser.closed:
        # Every spooled file, the cut-off part's too, which never made it into the form.
        for spooled in parser._files_to_close_on_error:
            spooled.close()
        raise MalformedMultipart(
            "the multipart body ends before its closing boundary (--BOUNDARY--): "
            "it was cut off, or its last part is missing"
        )
    request._form = form  # where Request.form() looks first, so FastAPI reuses this parse
    return form


def document_uploads(app: FastAPI, max_files: Mapping[str, int]) -> None:
    """State the upload rules (module docstring) in `app`'s OpenAPI request schemas.

    `max_files` maps the path of each route that takes a repeated file field to its most files.
    """
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        document = build_openapi()
        schemas = document.get("components", {}).get("schemas", {})
        for path, operations in document.get("paths", {}).items():
            for operation in operations.values():
                content = operation.get("requestBody", {}).get("content", {})
                form = content.get(MULTIPART_MEDIA_TYPE)
                if form is not None:
                    _document_form(form, schemas, max_files.get(path))
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document_form(form: dict[str, Any], schemas: dict[str, Any], most: int | None) -> None:
    reference: str = form.get("schema", {}).get("$ref", "")
    body = schemas.get(reference.rpartition("/")[2], form.get("schema", {}))
    encoding = form.setdefault("encoding", {})
    for name, field in body.get("properties", {}).items():
        if _is_file(field):
            field["minLength"] = 1
        elif field.get("type") == "array" and _is_file(field.get("items", {})):
            field["minItems"] = 1
            if most is not None:
                field["maxItems"] = most
        else:
            continue
        encoding.setdefault(name, {})["contentType"] = ", ".join(IMAGE_MEDIA_TYPES)


def _is_file(field: dict[str, Any]) -> bool:
    # How FastAPI (OpenAPI 3.1) writes an UploadFile: a string of application/octet-stream.
    return field.get("type") == "string" and field.get("contentMediaType") == (
        "application/octet-stream"
    )
