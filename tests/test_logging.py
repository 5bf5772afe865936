"""Structured access logs: one JSON line per request, and the request id end to end."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.images import image_bytes
from tests.problems import assert_problem

from facedemo.api.state import ServiceState
from facedemo.config import Settings
from facedemo.logging_config import ACCESS_LOGGER, JsonFormatter, build_log_config

pytestmark = pytest.mark.anyio

FIELDS = {
    "request_id",
    "method",
    "route",
    "status",
    "latency_ms",
    "faces",
    "upload_bytes",
    "client",
}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """Each access record as the JSON line the server would write."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == ACCESS_LOGGER
    ]


async def test_one_json_line_per_request_with_every_field(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    upload = image_bytes("PNG")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        predicted = await client.post(
            "/predict",
            params={"detect": "skip"},
            files={"file": ("face.png", upload, "image/png")},
        )
        model = await client.get("/models/no-such-model")
        missing = await client.get("/nowhere")

    first, second, third = access_lines(caplog)
    assert set(first) == {"time", "level", "logger", "message"} | FIELDS
    assert first["request_id"] == predicted.headers["x-request-id"]
    assert first["request_id"] == predicted.json()["request_id"]
    assert (first["method"], first["route"], first["status"]) == ("POST", "/predict", 200)
    assert first["faces"] == 1
    assert len(upload) < first["upload_bytes"] < len(upload) + 1024  # the multipart body
    assert 0 < first["latency_ms"] < 60_000
    assert first["message"] == "POST /predict 200"
    assert (second["route"], second["status"], second["faces"]) == ("/models/{name}", 404, None)
    assert second["request_id"] == model.headers["x-request-id"]
    assert (third["route"], third["status"], third["upload_bytes"]) == (None, 404, 0)
    assert third["request_id"] == missing.headers["x-request-id"]


async def test_client_addresses_are_hashed_never_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        await client.get("/livez")
        await client.get("/livez")

    first, second = access_lines(caplog)
    assert first["client"] == second["client"]  # one client, one stable pseudonym
    assert len(first["client"]) == 16 and "127.0.0.1" not in json.dumps(first)


async def test_uploads_and_queries_stay_out_of_the_log(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"diary of patient 4711"
    with caplog.at_level(logging.DEBUG):
        upload = await client.post(
            "/predict",
            params={"detect": "skip"},
            files={"file": ("4711-private.jpg", secret, "image/jpeg")},
        )
        # An unknown parameter is refused by name (422); its value is not logged either.
        query = await client.post(
            "/predict",
            params={"detect": "skip", "note": "private-query-4711"},
            files={"file": ("face.jpg", secret, "image/jpeg")},
        )

    assert_problem(upload, 400, "image_undecodable")
    assert_problem(query, 422, "validation_error")
    server_records = [
        record for record in caplog.records if not record.name.startswith(("httpx", "httpcore"))
    ]  # the test's own client logs the URL it calls; the server's loggers are what counts
    logged = " ".join(logging.Formatter().format(record) for record in server_records)
    logged += " ".join(json.dumps(line) for line in access_lines(caplog))
    assert server_records and "4711" not in logged and "private" not in logged


@pytest.mark.parametrize(
    "request_id",
    ["trace-01.AB_cd", "x" * 128],
    ids=["typical", "128-characters"],
)
async def test_a_valid_incoming_request_id_is_kept(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, request_id: str
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        response = await client.post(
            "/predict",
            params={"detect": "skip"},
            headers={"X-Request-ID": request_id},
            files={"file": ("face.png", image_bytes("PNG"), "image/png")},
        )

    assert response.headers["x-request-id"] == request_id
    assert response.json()["request_id"] == request_id
    assert [line["request_id"] for line in access_lines(caplog)] == [request_id]


@pytest.mark.parametrize(
    "request_id",
    ["x" * 129, "has space", "<script>", "semi;colon", "ünïcode"],
    ids=["129-characters", "space", "markup", "semicolon", "non-ascii"],
)
async def test_an_unsafe_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, request_id: str
) -> None:
    response = await client.get("/livez", headers=[(b"x-request-id", request_id.encode("utf-8"))])

    echoed = response.headers["x-request-id"]
    assert echoed != request_id
    assert len(echoed) == 32 and int(echoed, 16) >= 0


async def test_an_unexpected_error_is_logged_with_its_id_and_500(
    ready_app: FastAPI,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state: ServiceState = ready_app.state.service

    async def explode(data: bytes, detect: object, age_thresholds: object = None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(state.serving, "predict_image", explode)
    transport = httpx.ASGITransport(app=ready_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as raw:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            response = await raw.post(
                "/predict",
                params={"detect": "skip"},
                files={"file": ("face.png", image_bytes("PNG"), "image/png")},
            )

    assert_problem(response, 500, "internal_error")
    [line] = access_lines(caplog)
    assert (line["status"], line["route"]) == (500, "/predict")
    assert line["request_id"] == response.headers["x-request-id"]


def test_the_json_formatter_writes_one_parseable_line() -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        record = logging.LogRecord(
            "facedemo.access", logging.INFO, __file__, 1, "GET %s", ("/livez",), sys.exc_info()
        )
    record.fields = {"status": 200, "faces": None}

    line = JsonFormatter().format(record)

    assert "\n" not in line.split('"exception"')[0]
    document = json.loads(line)
    assert document["message"] == "GET /livez"
    assert (document["status"], document["faces"], document["level"]) == (200, None, "info")
    assert document["time"].endswith("+00:00")
    assert "ValueError: bad thing" in document["exception"]


@pytest.mark.parametrize("level", ["debug", "warning"])
def test_the_server_log_config_writes_json_access_lines_at_the_set_level(level: str) -> None:
    config = build_log_config(Settings(log_level=level))  # type: ignore[arg-type]
    script = (
        "import json, logging, logging.config, sys\n"
        "logging.config.dictConfig(json.loads(sys.argv[1]))\n"
        "log = logging.getLogger('facedemo.access')\n"
        "log.debug('GET / 200', extra={'fields': {'status': 200}})\n"
        "log.warning('GET / 503', extra={'fields': {'status': 503}})\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    expected = [200, 503] if level == "debug" else [503]
    assert [line["status"] for line in lines] == expected
    assert {line["logger"] for line in lines} == {"facedemo.access"}
