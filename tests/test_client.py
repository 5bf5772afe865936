"""facedemo.client against the real app: in-process (ASGI) and a `facedemo serve` on loopback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from PIL import Image
from starlette.types import Receive, Scope, Send
from tests.images import image_bytes
from tests.served import TINY_SERVER_KEY, Served, free_port

from facedemo.api import create_app
from facedemo.api.access_log import _VALID_REQUEST_ID
from facedemo.client import (
    NO_RETRY,
    AsyncClient,
    Client,
    ClientError,
    ProblemError,
    RetryPolicy,
    ServerError,
    ServiceNotReadyError,
    ServiceOverloadedError,
    TransportError,
    UnexpectedResponseError,
    wire,
)
from facedemo.client.errors import parse_retry_after
from facedemo.client.retry import Attempts
from facedemo.config import Settings
from facedemo.detect_mode import DetectMode
from facedemo.manifest import CLASSIFIER_NAME, REGRESSOR_NAME
from facedemo.schemas import (
    BatchImageError,
    BatchImageResult,
    BatchPredictResponse,
    ModelInfo,
    ModelsResponse,
    PredictResponse,
    Readiness,
)

pytestmark = pytest.mark.anyio

BASE_URL = "http://facedemo.test"
API_KEY = TINY_SERVER_KEY
FAST_RETRY = RetryPolicy(attempts=3, deadline=10.0, backoff=0.01)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'


class Recording(httpx.AsyncBaseTransport):
    """Passes requests to `inner` and keeps them, so tests can count tries and read headers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        await request.aread()  # keeps the body readable for the test; the inner transport too
        return await self.inner.handle_async_request(request)


@asynccontextmanager
async def client_of(
    app: FastAPI, retry: RetryPolicy = FAST_RETRY, api_key: str | None = None
) -> AsyncIterator[tuple[AsyncClient, Recording]]:
    """An AsyncClient talking to `app` in-process (lifespan run), and the requests it sent."""
    async with LifespanManager(app, startup_timeout=60) as manager:
        recording = Recording(httpx.ASGITransport(app=manager.app))
        async with httpx.AsyncClient(transport=recording) as http:
            client = AsyncClient(BASE_URL, api_key=api_key, retry=retry, http_client=http)
            await _settle(client)
            recording.requests.clear()
            yield client, recording


async def _settle(client: AsyncClient) -> None:
    """Wait for model loading to finish, one way or the other."""
    import anyio

    with anyio.fail_after(120):
        while True:
            try:
                await client.ready()
                return
            except ServiceNotReadyError as error:
                if "still loading" not in (error.detail or ""):
                    return
            await anyio.sleep(0.05)


@pytest.fixture(scope="module")
async def app_client(tiny_models_dir: Path) -> AsyncIterator[tuple[AsyncClient, Recording]]:
    async with client_of(
        create_app(Settings(models_dir=tiny_models_dir, api_keys=API_KEY)), api_key=API_KEY
    ) as pair:
        yield pair


@pytest.fixture
def app_recording(app_client: tuple[AsyncClient, Recording]) -> Recording:
    app_client[1].requests.clear()
    return app_client[1]


@pytest.fixture
def client(app_client: tuple[AsyncClient, Recording], app_recording: Recording) -> AsyncClient:
    return app_client[0]


def png_file(path: Path, seed: int = 0) -> Path:
    path.write_bytes(image_bytes("PNG", height=40, width=30, seed=seed))
    return path


# ----------------------------------------------------------------------------- every method


@pytest.mark.parametrize("form", ["path", "str", "bytes", "file", "pil"])
async def test_predict_takes_every_image_form(
    client: AsyncClient, tmp_path: Path, form: str
) -> None:
    path = png_file(tmp_path / "face.png")
    with path.open("rb") as file, Image.open(path) as pil_image:
        image: object = {
            "path": path,
            "str": str(path),
            "bytes": path.read_bytes(),
            "file": file,
            "pil": pil_image,
        }[form]
        answer = await client.predict(image, detect="skip")  # type: ignore[arg-type]
    assert isinstance(answer, PredictResponse)
    assert answer.image.width == 30 and answer.image.height == 40
    assert [face.box.width for face in answer.faces] == [30]
    assert {model.name for model in answer.models} == {CLASSIFIER_NAME, REGRESSOR_NAME}


async def test_predict_sends_the_detect_mode_and_the_file_name(
    client: AsyncClient, app_recording: Recording, tmp_path: Path
) -> None:
    await client.predict(png_file(tmp_path / "named.png"), detect=DetectMode.SKIP)
    request = app_recording.requests[-1]
    assert request.url.params["detect"] == "skip"
    assert b'filename="named.png"' in request.content
    assert b"Content-Type: image/png" in request.content


async def test_predict_asks_for_its_age_checks(
    client: AsyncClient, app_recording: Recording, tmp_path: Path
) -> None:
    answer = await client.predict(png_file(tmp_path / "a.png"), detect="skip", age_over=[21, 18])
    batch = await client.predict_batch(
        [png_file(tmp_path / "b.png")], detect="skip", age_over=(16,)
    )

    assert app_recording.requests[-2].url.params.get_list("age_over") == ["21", "18"]
    assert app_recording.requests[-1].url.params.get_list("age_over") == ["16"]
    assert list(answer.faces[0].age.over) == ["18", "21"]
    assert isinstance(batch.items[0], BatchImageResult)
    assert [list(face.age.over) for face in batch.items[0].faces] == [["16"]]


async def test_predict_batch_answers_each_image_in_order(
    client: AsyncClient, tmp_path: Path
) -> None:
    good = png_file(tmp_path / "good.png")
    answer = await client.predict_batch([good, b"not an image", good.read_bytes()], detect="skip")
    assert isinstance(answer, BatchPredictResponse)
    first, second, third = answer.items
    assert isinstance(first, BatchImageResult) and first.filename == "good.png"
    assert isinstance(second, BatchImageError) and second.error.code == "image_undecodable"
    assert isinstance(third, BatchImageResult) and third.faces[0].age == first.faces[0].age
    assert answer.summary.images.ok == 2 and answer.summary.images.failed == 1


async def test_predict_batch_needs_an_image(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        await client.predict_batch([])


async def test_models_and_model(client: AsyncClient) -> None:
    models = await client.models()
    assert isinstance(models, ModelsResponse)
    assert sorted(model.name for model in models.models) == [CLASSIFIER_NAME, REGRESSOR_NAME]
    one = await client.model(REGRESSOR_NAME)
    assert isinstance(one, ModelInfo) and one.version == "1.0.0"
    with pytest.raises(ClientError) as caught:
        await client.model("no-such-model")
    assert caught.value.status == 404 and caught.value.code == "unknown_model"
    assert CLASSIFIER_NAME in (caught.value.detail or "")


async def test_ready(client: AsyncClient) -> None:
    readiness = await client.ready()
    assert isinstance(readiness, Readiness) and readiness.status == "ready"
    assert {model.name for model in readiness.models} == {CLASSIFIER_NAME, REGRESSOR_NAME}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("image", "detect", "status", "code"),
    [
        (b"not an image", None, 400, "image_undecodable"),
        (b"", None, 400, "empty_file"),
        (SVG, None, 415, "unsupported_image_format"),
        (image_bytes("PNG"), "sideways", 422, "validation_error"),
    ],
)
async def test_client_errors_carry_the_problem_and_are_not_retried(
    client: AsyncClient,
    app_recording: Recording,
    image: bytes,
    detect: str | None,
    status: int,
    code: str,
) -> None:
    with pytest.raises(ClientError) as caught:
        await client.predict(image, detect=detect, request_id="caller-id.1")
    error = caught.value
    assert (error.status, error.code) == (status, code)
    assert error.title and error.detail
    assert error.request_id == "caller-id.1"
    assert str(error).startswith(f"{status} {code}: ")
    assert len(app_recording.requests) == 1  # 4xx is never retried
    if code == "validation_error":
        assert error.errors is not None and error.errors[0].loc == ["query", "detect"]


async def test_upload_over_the_limit_is_a_413_not_retried(tiny_models_dir: Path) -> None:
    app = create_app(Settings(models_dir=tiny_models_dir, max_upload_bytes=1000))
    async with client_of(app) as (client, recording):
        with pytest.raises(ClientError) as caught:
            await client.predict(image_bytes("PNG", height=64, width=64))
    assert caught.value.status == 413 and caught.value.code == "upload_too_large"
    assert len(recording.requests) == 1


async def test_api_key_is_sent_and_a_missing_one_is_refused(
    client: AsyncClient, app_recording: Recording, tiny_models_dir: Path
) -> None:
    await client.models()
    assert app_recording.requests[-1].headers["X-API-Key"] == API_KEY
    keyless = AsyncClient(BASE_URL, retry=FAST_RETRY, http_client=client._http)
    with pytest.raises(ClientError) as caught:
        await keyless.models()
    assert caught.value.status == 401 and caught.value.code == "unauthorized"
    assert "X-API-Key" not in app_recording.requests[-1].headers
    assert API_KEY not in repr(client)


async def test_request_id_round_trip(client: AsyncClient, app_recording: Recording) -> None:
    answer = await client.predict(image_bytes("PNG"), detect="skip", request_id="order-42_a.b")
    assert answer.request_id == "order-42_a.b"
    assert app_recording.requests[-1].headers["X-Request-ID"] == "order-42_a.b"
    fresh = await client.predict(image_bytes("PNG"), detect="skip")
    sent = app_recording.requests[-1].headers["X-Request-ID"]
    assert fresh.request_id == sent and len(sent) == 32 and sent != "order-42_a.b"
    with pytest.raises(ValueError, match="request id"):
        await client.models(request_id="has spaces")


def test_request_ids_are_checked_by_the_service_rule() -> None:
    assert wire._VALID_REQUEST_ID.pattern == _VALID_REQUEST_ID.pattern


async def test_not_ready_is_retried_then_raised_and_ready_answers_at_once(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(models_dir=tmp_path / "no-models"))  # loading fails: not_ready
    async with client_of(app, retry=RetryPolicy(attempts=3, backoff=0.01)) as (client, recording):
        with pytest.raises(ServiceNotReadyError) as caught:
            await client.predict(image_bytes("PNG"))
        assert caught.value.status == 503 and caught.value.code == "not_ready"
        assert len(recording.requests) == 3
        ids = {request.headers["X-Request-ID"] for request in recording.requests}
        assert ids == {caught.value.request_id}  # one request id for all tries
        recording.requests.clear()
        with pytest.raises(ServiceNotReadyError):
            await client.ready()
        assert len(recording.requests) == 1


class BusyOnce:
    """An ASGI app that answers the first `busy` requests 503 overloaded, then passes to `app`."""

    def __init__(self, app: FastAPI, retry_after: str, busy: int = 1) -> None:
        self.app, self.retry_after, self.busy = app, retry_after, busy
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.answered >= self.busy:
            await self.app(scope, receive, send)
            return
        self.answered += 1
        body = json.dumps(
            {"title": "Service overloaded", "status": 503, "code": "overloaded", "detail": "busy"}
        ).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"retry-after", self.retry_after.encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def test_503_overloaded_is_retried_after_retry_after(ready_app_for_stub: FastAPI) -> None:
    stub = BusyOnce(ready_app_for_stub, retry_after="1")
    recording = Recording(httpx.ASGITransport(app=stub))
    async with httpx.AsyncClient(transport=recording) as http:
        client = AsyncClient(BASE_URL, retry=FAST_RETRY, http_client=http)
        answer = await client.predict(image_bytes("PNG"), detect="skip", request_id="retry-me")
    assert answer.request_id == "retry-me" and len(answer.faces) == 1
    assert len(recording.requests) == 2
    assert recording.times[1] - recording.times[0] >= 1.0  # waited what Retry-After said
    assert [request.headers["X-Request-ID"] for request in recording.requests] == ["retry-me"] * 2


async def test_503_with_a_retry_after_past_the_deadline_is_raised_at_once(
    ready_app_for_stub: FastAPI,
) -> None:
    stub = BusyOnce(ready_app_for_stub, retry_after="120")
    recording = Recording(httpx.ASGITransport(app=stub))
    async with httpx.AsyncClient(transport=recording) as http:
        client = AsyncClient(BASE_URL, retry=RetryPolicy(deadline=5.0), http_client=http)
        with pytest.raises(ServiceOverloadedError) as caught:
            await client.predict(image_bytes("PNG"))
    assert caught.value.retry_after == 120.0
    assert len(recording.requests) == 1


async def test_retries_stop_after_the_attempts(ready_app_for_stub: FastAPI) -> None:
    stub = BusyOnce(ready_app_for_stub, retry_after="0", busy=10)
    recording = Recording(httpx.ASGITransport(app=stub))
    async with httpx.AsyncClient(transport=recording) as http:
        client = AsyncClient(BASE_URL, retry=RetryPolicy(attempts=2), http_client=http)
        with pytest.raises(ServiceOverloadedError):
            await client.models()
        recording.requests.clear()
        with pytest.raises(ServiceOverloadedError):
            await AsyncClient(BASE_URL, retry=NO_RETRY, http_client=http).models()
    assert len(recording.requests) == 1


@pytest.fixture(scope="module")
async def ready_app_for_stub(tiny_models_dir: Path) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(models_dir=tiny_models_dir))
    async with LifespanManager(app, startup_timeout=60) as manager:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app)) as http:
            await _settle(AsyncClient(BASE_URL, http_client=http))
        yield app


async def test_transport_errors_are_retried(ready_app_for_stub: FastAPI) -> None:
    inner = httpx.ASGITransport(app=ready_app_for_stub)
    failures = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]

    async def flaky(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return await inner.handle_async_request(request)

    recording = Recording(httpx.MockTransport(flaky))
    async with httpx.AsyncClient(transport=recording) as http:
        answer = await AsyncClient(BASE_URL, retry=FAST_RETRY, http_client=http).ready()
    assert answer.status == "ready" and len(recording.requests) == 3


def test_a_closed_port_is_a_transport_error_after_the_retries() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY) as client:
        with pytest.raises(TransportError) as caught:
            client.models(request_id="nobody-home")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.request_id == "nobody-home"


def answering(status: int, body: bytes, content_type: str) -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        answer.calls += 1  # type: ignore[attr-defined]
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    answer.calls = 0  # type: ignore[attr-defined]
    http = httpx.Client(transport=httpx.MockTransport(answer))
    client = Client(BASE_URL, retry=FAST_RETRY, http_client=http)
    client.calls = answer  # type: ignore[attr-defined]
    return client


def test_an_error_page_without_problem_details_is_still_a_problem_error() -> None:
    client = answering(502, b"<html>bad gateway</html>", "text/html")
    with pytest.raises(ServerError) as caught:
        client.models()
    assert (caught.value.status, caught.value.code) == (502, "bad_gateway")
    assert client.calls.calls == 1  # type: ignore[attr-defined]


def test_an_answer_of_the_wrong_shape_is_unexpected() -> None:
    client = answering(200, b'{"models": "nope"}', "application/json")
    with pytest.raises(UnexpectedResponseError, match="not a ModelsResponse"):
        client.models()


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 95 <= (parse_retry_after(future) or 0) <= 101


def test_attempts_never_retry_client_errors() -> None:
    from facedemo.schemas import Problem

    problem = Problem(title="Bad", status=400, code="image_undecodable")
    attempts = Attempts(RetryPolicy(attempts=5))
    assert attempts.next_delay(ClientError(problem, "id")) is None
    overloaded = Problem(title="Busy", status=503, code="overloaded")
    delay = attempts.next_delay(ServiceOverloadedError(overloaded, "id", retry_after=0.5))
    assert delay is not None and 0.5 <= delay <= 0.5 + attempts.policy.backoff
    server_error = Problem(title="Oops", status=500, code="internal_error")
    assert attempts.next_delay(ServerError(server_error, "id")) is None
    assert isinstance(ClientError(problem, "id"), ProblemError)


# ----------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(tiny_server: Served) -> Served:
    return tiny_server


def test_sync_client_against_a_served_instance(server: Served, tmp_path: Path) -> None:
    good = png_file(tmp_path / "good.png")
    with Client(server.url, api_key=API_KEY, retry=FAST_RETRY) as client:
        assert client.ready().status == "ready"
        answer = client.predict(good, detect="skip", request_id="served-1")
        assert answer.request_id == "served-1" and answer.faces[0].box.height == 40
        batch = client.predict_batch([good, b"junk"], detect="skip")
        assert [type(item) for item in batch.items] == [BatchImageResult, BatchImageError]
        assert {model.name for model in client.models().models} == {CLASSIFIER_NAME, REGRESSOR_NAME}
        assert client.model(CLASSIFIER_NAME).name == CLASSIFIER_NAME
        with pytest.raises(ClientError) as caught:
            client.predict(SVG, request_id="served-2")
        assert (caught.value.status, caught.value.code) == (415, "unsupported_image_format")
        assert caught.value.request_id == "served-2"
    with Client(server.url, retry=FAST_RETRY) as keyless, pytest.raises(ClientError) as refused:
        keyless.models()
    assert refused.value.code == "unauthorized"


async def test_async_client_against_a_served_instance(server: Served, tmp_path: Path) -> None:
    import anyio

    paths = [png_file(tmp_path / f"face-{seed}.png", seed) for seed in range(6)]
    async with AsyncClient(server.url, api_key=API_KEY, retry=FAST_RETRY) as client:
        answers: dict[Path, PredictResponse] = {}

        async def predict(path: Path) -> None:
            answers[path] = await client.predict(path, detect="skip")

        async with anyio.create_task_group() as tasks:
            for path in paths:
                tasks.start_soon(predict, path)
        assert len({answer.request_id for answer in answers.values()}) == len(paths)
        assert (await client.ready()).status == "ready"
        with pytest.raises(ClientError) as caught:
            await client.predict(b"junk")
        assert caught.value.code == "image_undecodable"


# ----------------------------------------------------------------------------- import cost


HEAVY_MODULES = (
    "tensorflow",
    "keras",
    "numpy",
    "PIL",
    "mtcnn",
    "fastapi",
    "starlette",
    "facedemo.pipeline",
    "facedemo.imaging",
    "facedemo.registry",
    "facedemo.detection",
    "facedemo.mtcnn_detector",
    "facedemo.retinaface_detector",
    "onnxruntime",
    "facedemo.batching",
    "facedemo.api",
    "facedemo.config",
)


def test_importing_the_client_imports_nothing_of_the_server() -> None:
    probe = "import json, sys, facedemo.client; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(result.stdout))
    heavy = sorted(
        name for name in loaded if any(name == m or name.startswith(m + ".") for m in HEAVY_MODULES)
    )
    assert heavy == []
    assert {"facedemo.client", "facedemo.schemas", "httpx", "pydantic"} <= loaded


def test_pil_images_are_sent_without_importing_pil_for_other_inputs() -> None:
    upload = wire.upload_of(io.BytesIO(b"abc"))
    assert (upload.filename, upload.content) == ("image", b"abc")
    with pytest.raises(TypeError, match="cannot send a int"):
        wire.upload_of(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="binary mode"):
        wire.upload_of(io.StringIO("text"))  # type: ignore[arg-type]
