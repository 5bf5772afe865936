"""The HTTP layer: `create_app()` builds the FastAPI application.

`create_app` is imported on first use, so that importing a light module of this package (such as
`connections`, which `facedemo serve` needs before it binds its port) does not import TensorFlow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facedemo.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from facedemo.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
