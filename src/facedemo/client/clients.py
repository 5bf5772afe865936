"""`Client` and `AsyncClient`: the service's routes as methods that return its own models.

Both send every request with an `X-Request-ID` (the caller's, or a fresh one) and the API key
when one is given, try it again as `RetryPolicy` says (retry.py), and return the route's pydantic
model from `facedemo.schemas` or raise an exception of `errors.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TypeVar

import httpx

from facedemo.client.errors import FacedemoClientError, ProblemError, TransportError
from facedemo.client.retry import Attempts, RetryPolicy
from facedemo.client.wire import (
    REQUEST_ID_HEADER,
    Answer,
    Call,
    ImageInput,
    Upload,
    is_in_memory,
    model_call,
    models_call,
    predict_batch_call,
    predict_call,
    read_answer,
    ready_call,
    request_headers,
    upload_of,
)
from facedemo.schemas import (
    BatchPredictResponse,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    Readiness,
)

logger = logging.getLogger("facedemo.client")

SelfClient = TypeVar("SelfClient", bound="Client")
SelfAsyncClient = TypeVar("SelfAsyncClient", bound="AsyncClient")

DEFAULT_TIMEOUT_SECONDS = 30.0


class _Base:
    """What both clients hold: where the service is, the key, and the retry policy."""

    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.retry = retry or RetryPolicy()

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.base_url!r})"

    def _url(self, call: Call[Answer]) -> str:
        return self.base_url + call.path

    def _failure(self, error: httpx.TransportError, request_id: str) -> TransportError:
        failure = TransportError(f"no answer from {self.base_url}: {error!r}", request_id)
        failure.__cause__ = error
        return failure

    def _log_retry(self, call: Call[Answer], error: FacedemoClientError, delay: float) -> None:
        logger.info(
            "%s %s failed (%s); trying again in %.2f s", call.method, call.path, error, delay
        )


class Client(_Base):
    """A synchronous client of a facedemo service.

        with Client("http://faces.internal:8000", api_key=key) as faces:
            answer = faces.predict("photo.jpg")
            for face in answer.faces:
                print(face.age.years, face.gender.label)

    `http_client` shares an existing `httpx.Client` (its pool, proxies, TLS and timeout settings;
    the client leaves it open); otherwise one is made with `timeout` seconds per try.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        """Talk to the service at `base_url`, e.g. "http://127.0.0.1:8000"."""
        super().__init__(base_url, api_key, retry)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)

    def predict(
        self,
        image: ImageInput,
        *,
        detect: str | None = None,
        age_over: Iterable[int] | None = None,
        request_id: str | None = None,
    ) -> PredictResponse:
        """Age and gender of every face in one image (POST /predict).

        `detect` is "auto" (find and align faces) or "skip" (the image is one face crop); None
        leaves the service's default. `age_over` (e.g. [18, 21]) chooses the thresholds T of
        each face's `age.over`, P(age >= T); None leaves the service's.
        """
        return self._send(predict_call(upload_of(image), detect, age_over), request_id)

    def predict_batch(
        self,
        images: Iterable[ImageInput],
        *,
        detect: str | None = None,
        age_over: Iterable[int] | None = None,
        request_id: str | None = None,
    ) -> BatchPredictResponse:
        """Every image's faces, in order, and a crowd summary (POST /predict/batch).

        An image the service cannot read is answered in its own item's `error`; the rest are
        predicted.
        """
        uploads = map(upload_of, images)
        return self._send(predict_batch_call(uploads, detect, age_over), request_id)

    def models(self, *, request_id: str | None = None) -> ModelsResponse:
        """The loaded models' manifests and the device they run on (GET /models)."""
        return self._send(models_call(), request_id)

    def model(self, name: str, *, request_id: str | None = None) -> ModelInfo:
        """One loaded model's manifest (GET /models/{name}); ClientError 404 if unknown."""
        return self._send(model_call(name), request_id)

    def ready(self, *, request_id: str | None = None) -> Readiness:
        """The loaded models, when the service is ready (GET /readyz).

        Raises ServiceNotReadyError at once while it is not: a 503 here is not retried.
        """
        return self._send(ready_call(), request_id)

    def close(self) -> None:
        """Close the connection pool, unless it was the caller's `http_client`."""
        if self._owns_http:
            self._http.close()

    def __enter__(self: SelfClient) -> SelfClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call[Answer], request_id: str | None) -> Answer:
        headers = request_headers(request_id, self._api_key)
        sent_id = headers[REQUEST_ID_HEADER]
        attempts = Attempts(self.retry, when_unavailable=call.retry_when_unavailable)
        while True:
            failure: FacedemoClientError
            try:
                response = self._http.request(
                    call.method,
                    self._url(call),
                    params=call.params,
                    files=call.files,
                    headers=headers,
                )
            except httpx.TransportError as error:
                failure = self._failure(error, sent_id)
            else:
                try:
                    return read_answer(call, response, sent_id)
                except ProblemError as error:
                    failure = error
            delay = attempts.next_delay(failure)
            if delay is None:
                raise failure
            self._log_retry(call, failure, delay)
            time.sleep(delay)


class AsyncClient(_Base):
    """An asynchronous client of a facedemo service; the same methods as `Client`, awaited.

        async with AsyncClient("http://faces.internal:8000") as faces:
            answers = await asyncio.gather(*(faces.predict(path) for path in paths))

    `http_client` shares an existing `httpx.AsyncClient` (e.g. one over
    `httpx.ASGITransport(app)` in tests); the client leaves it open.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_connections: int = 100,
    ) -> None:
        """Talk to the service at `base_url`; at most `max_connections` open at once."""
        super().__init__(base_url, api_key, retry)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def predict(
        self,
        image: ImageInput,
        *,
        detect: str | None = None,
        age_over: Iterable[int] | None = None,
        request_id: str | None = None,
    ) -> PredictResponse:
        """Age and gender of every face in one image (POST /predict); see `Client.predict`."""
        call = predict_call(await _upload(image), detect, age_over)
        return await self._send(call, request_id)

    async def predict_batch(
        self,
        images: Iterable[ImageInput],
        *,
        detect: str | None = None,
        age_over: Iterable[int] | None = None,
        request_id: str | None = None,
    ) -> BatchPredictResponse:
        """Every image's faces and a crowd summary (POST /predict/batch); see `Client`."""
        uploads = [await _upload(image) for image in images]
        return await self._send(predict_batch_call(uploads, detect, age_over), request_id)

    async def models(self, *, request_id: str | None = None) -> ModelsResponse:
        """The loaded models' manifests and the device they run on (GET /models)."""
        return await self._send(models_call(), request_id)

    async def model(self, name: str, *, request_id: str | None = None) -> ModelInfo:
        """One loaded model's manifest (GET /models/{name}); ClientError 404 if unknown."""
        return await self._send(model_call(name), request_id)

    async def ready(self, *, request_id: str | None = None) -> Readiness:
        """The loaded models, when the service is ready (GET /readyz); a 503 is not retried."""
        return await self._send(ready_call(), request_id)

    async def aclose(self) -> None:
        """Close the connection pool, unless it was the caller's `http_client`."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self: SelfAsyncClient) -> SelfAsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[Answer], request_id: str | None) -> Answer:
        headers = request_headers(request_id, self._api_key)
        sent_id = headers[REQUEST_ID_HEADER]
        attempts = Attempts(self.retry, when_unavailable=call.retry_when_unavailable)
        while True:
            failure: FacedemoClientError
            try:
                response = await self._http.request(
                    call.method,
                    self._url(call),
                    params=call.params,
                    files=call.files,
                    headers=headers,
                )
            except httpx.TransportError as error:
                failure = self._failure(error, sent_id)
            else:
                try:
                    return read_answer(call, response, sent_id)
                except ProblemError as error:
                    failure = error
            delay = attempts.next_delay(failure)
            if delay is None:
                raise failure
            self._log_retry(call, failure, delay)
            await _sleep(delay)


# anyio (asyncio or trio, whichever runs httpx) is imported on first use: a sync caller never
# needs it, and it costs tens of milliseconds to import.


async def _upload(image: ImageInput) -> Upload:
    # Reading a file or encoding a PIL image would hold up the event loop; bytes need neither.
    if is_in_memory(image):
        return upload_of(image)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(upload_of, image)


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
