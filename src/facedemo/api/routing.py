"""`DocumentedRoute`: the service's route class.

Its docstring documents it in OpenAPI, first line as summary; and when it takes uploads (File or
Form parameters) the checks of `api/uploads.py` run before FastAPI reads the body.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute

from facedemo.api.uploads import Handler, guard_uploads, takes_upload


class DocumentedRoute(APIRoute):
    """An APIRoute that takes its summary from the endpoint docstring's first line.

    FastAPI would title-case the function name instead ("Predict"); the rest of the docstring
    becomes the description. Upload routes get the media type and multipart checks of uploads.py.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        """Build the route as FastAPI does, then fill summary and description from the docstring."""
        super().__init__(path, endpoint, **options)
        if self.summary is None and endpoint.__doc__:
            summary, _, rest = inspect.cleandoc(endpoint.__doc__).partition("\n")
            self.summary = summary.strip().rstrip(".")  # a title, not a sentence
            self.description = rest.split("\f")[0].strip()

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, behind the upload checks when the route takes uploads."""
        handler = super().get_route_handler()
        return guard_uploads(self, handler) if takes_upload(self) else handler
