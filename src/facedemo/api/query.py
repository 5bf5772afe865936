"""Unknown query parameters are refused, on every documented route.

FastAPI ignores a query parameter a route does not declare, so a typo (`/predict?detct=skip`)
silently runs with the default (`detect=auto`) and the caller never learns why its crops found
no face. `refuse_unknown_query` answers such a request with the 422 validation problem instead,
naming each unknown parameter and the route's known ones, before its body is read.
`DocumentedRoute` (api/routing.py) applies it to every route it builds, so no route can forget it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def known_query_parameters(dependant: Dependant) -> tuple[str, ...]:
    """The query parameters a route declares, its dependencies' included, sorted."""
    names = {field.alias for field in dependant.query_params}
    for dependency in dependant.dependencies:
        names.update(known_query_parameters(dependency))
    return tuple(sorted(names))


def refuse_unknown_query(known: tuple[str, ...], handler: Handler) -> Handler:
    """`handler` behind a check that the query string names only parameters in `known`."""
    takes = f"known: {', '.join(known)}" if known else "this route takes no query parameters"

    async def checked(request: Request) -> Response:
        unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
        if unknown:
            raise RequestValidationError(
                [
                    {
                        "type": "extra_forbidden",
                        "loc": ("query", name),
                        "msg": f"Unknown query parameter; {takes}",
                    }
                    for name in unknown
                ]
            )
        return await handler(request)

    return checked
