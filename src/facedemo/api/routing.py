"""`DocumentedRoute`: a route whose docstring documents it in OpenAPI, first line as summary."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute


class DocumentedRoute(APIRoute):
    """An APIRoute that takes its summary from the endpoint docstring's first line.

    FastAPI would title-case the function name instead ("Predict"); the rest of the docstring
    becomes the description.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        """Build the route as FastAPI does, then fill summary and description from the docstring."""
        super().__init__(path, endpoint, **options)
        if self.summary is None and endpoint.__doc__:
            summary, _, rest = inspect.cleandoc(endpoint.__doc__).partition("\n")
            self.summary = summary.strip().rstrip(".")  # a title, not a sentence
            self.description = rest.split("\f")[0].strip()
