"""The HTTP layer: `create_app()` builds the FastAPI application."""

from facedemo.api.app import create_app

__all__ = ["create_app"]
