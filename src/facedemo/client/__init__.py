"""A typed Python client of a facedemo service: `Client` (sync) and `AsyncClient` (async).

    from facedemo.client import Client, ClientError

    with Client("http://faces.internal:8000", api_key="...") as faces:
        answer = faces.predict("photo.jpg")          # a facedemo.schemas.PredictResponse
        for face in answer.faces:
            print(face.box, face.age.years, face.gender.label)

Answers are the service's own pydantic models (`facedemo.schemas`). Errors are one tree
(errors.py): `ClientError` for 4xx, `ServiceNotReadyError` / `ServiceOverloadedError` for the
503s that are retried with backoff (retry.py), `TransportError` when no answer came. Importing
this package imports httpx and pydantic, never TensorFlow, numpy or Pillow. docs/client.md has
the whole story.
"""

from facedemo.client.clients import AsyncClient, Client
from facedemo.client.errors import (
    ClientError,
    FacedemoClientError,
    ProblemError,
    ServerError,
    ServiceNotReadyError,
    ServiceOverloadedError,
    ServiceUnavailableError,
    TransportError,
    UnexpectedResponseError,
)
from facedemo.client.retry import NO_RETRY, RetryPolicy
from facedemo.client.wire import ImageInput

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "Client",
    "ClientError",
    "FacedemoClientError",
    "ImageInput",
    "ProblemError",
    "RetryPolicy",
    "ServerError",
    "ServiceNotReadyError",
    "ServiceOverloadedError",
    "ServiceUnavailableError",
    "TransportError",
    "UnexpectedResponseError",
]
