"""What the API does with work it cannot or need not finish: the memory budget for bodies, the
cost refusal, a client that leaves (499), and readiness under saturation."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.metrics import scrape, value
from tests.problems import assert_problem

from facedemo.api import create_app
from facedemo.api.state import ServiceState
from facedemo.config import Settings
from facedemo.serving import MemoryBudget

pytestmark = pytest.mark.anyio

BOUNDARY = "facedemo-test-boundary"


@pytest.fixture(scope="module")
async def app(tiny_models_dir: Path) -> AsyncIterator[FastAPI]:
    """An app whose memory budget holds 20 kB, and whose images may cost 1 MB to decode."""
    app = create_app(
        Settings(models_dir=tiny_models_dir, memory_budget_bytes=20_000, max_decode_bytes=1_000_000)
    )
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        app.state.test_client = client
        yield app


@pytest.fixture
def client(app: FastAPI) -> httpx.AsyncClient:
    test_client: httpx.AsyncClient = app.state.test_client
    return test_client


def multipart(data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"detect=skip",
        "root_path": "",
        "headers": [(b"host", b"facedemo"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def call_raw(
    app: FastAPI, body_messages: list[dict[str, Any]], then: Callable[[], Any]
) -> list[dict[str, Any]]:
    """Run one POST /predict on the bare ASGI app: `body_messages`, then `then()` forever."""
    sent: list[dict[str, Any]] = []
    queue = list(body_messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        result: dict[str, Any] = await then()
        return result

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    await app(http_scope("/predict", headers), receive, send)
    return sent


# ----------------------------------------------------------------------------- memory budget


async def test_a_body_the_budget_cannot_hold_is_refused_before_it_is_read(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    body = multipart(image_bytes("PNG", 100, 100, seed=1))  # about 30 kB: over the 20 kB

    response = await client.post(
        "/predict",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    problem = assert_problem(response, 503, "overloaded")
    assert "this request's body needs" in problem["detail"]
    assert response.headers["retry-after"] == "1"
    assert response.headers["connection"] == "close"
    budget: MemoryBudget = app.state.memory_budget
    assert budget.reserved_bytes == 0


async def test_a_refused_body_is_read_off_the_connection_before_the_answer(app: FastAPI) -> None:
    # Answering while the client still sends would reset the connection under the 503.
    body = multipart(image_bytes("PNG", 100, 100, seed=1))
    chunks = [body[start : start + 4096] for start in range(0, len(body), 4096)]
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    taken: list[int] = []

    async def receive() -> dict[str, Any]:
        taken.append(len(messages))
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append({**message, "body_left": len(messages)})

    length = str(len(body)).encode()
    headers = [
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
        (b"content-length", length),
    ]
    await app(http_scope("/predict", headers), receive, send)

    assert sent[0]["status"] == 503
    assert sent[0]["body_left"] == 0  # every chunk was read before the answer started
    assert app.state.memory_budget.reserved_bytes == 0


async def test_a_chunked_body_is_charged_as_it_arrives(client: httpx.AsyncClient) -> None:
    body = multipart(image_bytes("PNG", 100, 100, seed=2))

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post(
        "/predict",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )

    assert_problem(response, 503, "overloaded")


async def test_a_body_within_the_budget_is_answered_and_given_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    upload = {"file": ("face.png", image_bytes("PNG", 24, 24, seed=3), "image/png")}

    response = await client.post("/predict", params={"detect": "skip"}, files=upload)

    assert response.status_code == 200, response.text
    assert app.state.memory_budget.reserved_bytes == 0


# ----------------------------------------------------------------------------- decoding cost


async def test_an_image_too_expensive_to_decode_is_a_413_before_decoding(
    client: httpx.AsyncClient,
) -> None:
    # 1,000 x 1,000 float pixels: under the pixel limit, over the 1 MB decoding price.
    buffer = io.BytesIO()
    Image.new("F", (1000, 1000), 0.5).save(buffer, format="TIFF", compression="tiff_deflate")
    upload = {"file": ("float.tiff", buffer.getvalue(), "image/tiff")}

    response = await client.post("/predict", params={"detect": "skip"}, files=upload)

    problem = assert_problem(response, 413, "image_too_expensive")
    assert "1000000" in problem["detail"].replace(",", "")


# ----------------------------------------------------------------------------- clients that leave


async def test_a_client_leaving_during_its_upload_is_a_499_without_a_traceback(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = await scrape(client)
    half = multipart(image_bytes("PNG", 24, 24, seed=4))[:200]

    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with caplog.at_level(logging.INFO):
        sent = await call_raw(
            app, [{"type": "http.request", "body": half, "more_body": True}], gone
        )

    assert sent[0]["status"] == 499
    after = await scrape(client)
    labels = {"method": "POST", "route": "/predict"}
    total = "facedemo_http_requests_total"
    assert (
        value(after, total, status="499", **labels)
        == value(before, total, status="499", **labels) + 1
    )
    assert value(after, total, status="500", **labels) == value(
        before, total, status="500", **labels
    )
    assert not [record for record in caplog.records if record.exc_info]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_client_leaving_while_its_image_is_worked_on_cancels_the_work(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: ServiceState = app.state.service
    assert state.serving is not None
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(data: bytes, detect: object, age_thresholds: object = None) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cancelled.set()

    monkeypatch.setattr(state.serving, "predict_image", slow)
    body = multipart(image_bytes("PNG", 24, 24, seed=5))

    async def gone_once_started() -> dict[str, Any]:
        await started.wait()
        return {"type": "http.disconnect"}

    sent = await asyncio.wait_for(
        call_raw(app, [{"type": "http.request", "body": body}], gone_once_started), timeout=10
    )

    assert sent[0]["status"] == 499
    assert cancelled.is_set()


# ----------------------------------------------------------------------------- readiness


async def test_readiness_reports_saturation_with_its_reason(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: ServiceState = app.state.service
    assert state.serving is not None
    monkeypatch.setattr(state.serving, "saturation", lambda: "requests wait too long")

    response = await client.get("/readyz")

    problem = assert_problem(response, 503, "not_ready")
    assert problem["detail"] == "saturated: requests wait too long"
    assert (await client.get("/livez")).status_code == 200
