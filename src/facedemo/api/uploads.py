"""Checks for upload routes that FastAPI does not make before it reads a multipart body.

A route takes uploads when it has File/Form parameters. Before its handler runs:
- the body must be multipart/form-data: anything else (JSON, text, no Content-Type) is a 415
  problem, code `unsupported_media_type`, instead of FastAPI's "field required";
- the body must parse: no boundary or broken framing is a 400 problem, code `malformed_multipart`,
  instead of Starlette's plain "Bad Request";
- a field that takes one file (`file: UploadFile`) must not come twice: that is a 413 problem,
  code `too_many_files`, where FastAPI would silently keep the last one.

The form is parsed here once; FastAPI's own `request.form()` then gets the same parsed form.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response, UploadFile, params
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from facedemo.errors import MalformedMultipart, TooManyFiles, UnsupportedMediaType

MULTIPART_MEDIA_TYPE = "multipart/form-data"

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
        try:
            form = await request.form()
        except StarletteHTTPException as error:  # Starlette's MultiPartException, as a 400
            detail = f"the multipart body cannot be parsed: {error.detail}"
            raise MalformedMultipart(detail) from None
        for name in single_file_fields:
            count = len(form.getlist(name))
            if count > 1:
                await form.close()
                raise TooManyFiles(f"{count} files in the field {name!r}; this route takes one")
        return await handler(request)

    return guarded
