"""`DocumentedRoute`: the service's route class.

Its docstring documents it in OpenAPI, first line as summary; a query parameter it does not declare
is refused (`api/query.py`); and when it takes uploads (File or Form parameters) the checks of
`api/uploads.py` run before FastAPI reads the body.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute

from facedemo.api.problems import problem_responses
from facedemo.api.query import known_query_parameters, refuse_unknown_query
from facedemo.api.uploads import Handler, guard_uploads, takes_upload


class DocumentedRoute(APIRoute):
    """An APIRoute that takes its summary from the endpoint docstring's first line.

    FastAPI would title-case the function name instead ("Predict"); the rest of the docstring
    becomes the description. Unknown query parameters get 422; upload routes get the media type
    and multipart checks of uploads.py.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        """Build the route as FastAPI does, then fill summary and description from the docstring."""
        # Every route can answer 422 (an unknown query parameter), so every route documents it.
        options["responses"] = {**problem_responses(422), **(options.get("responses") or {})}
        super().__init__(path, endpoint, **options)
        if self.summary is None and endpoint.__doc__:
            summary, _, rest = inspect.cleandoc(endpoint.__doc__).partition("\n")
            self.summary = summary.strip().rstrip(".")  # a title, not a sentence
            self.description = rest.split("\f")[0].strip()

    def get_route_handler(self) -> Handler:
        """FastAPI's handler, behind the query check and, for uploads, the upload checks."""
        handler = super().get_route_handler()
        if takes_upload(self):
            handler = guard_uploads(self, handler)
        # Outermost: a mistyped parameter is answered before any body is read.
        return refuse_unknown_query(known_query_parameters(self.dependant), handler)
