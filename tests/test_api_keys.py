"""Optional API keys: which paths need one, how it is sent, how it is compared and documented."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem

import facedemo.api.security
from facedemo.api import create_app
from facedemo.api.security import ApiKeyPolicy
from facedemo.config import Settings, describe_invalid_settings

pytestmark = pytest.mark.anyio

KEYS = ("alpha-7f3c9e2b41d8", "beta-0a5d6e8c93f1")


@pytest.fixture(scope="module")
def app(tiny_models_dir: Path) -> FastAPI:
    return create_app(Settings(models_dir=tiny_models_dir, api_keys=",".join(KEYS)))


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        yield client


def unloaded_client(**settings: object) -> httpx.AsyncClient:
    """A client of an app whose models never load: enough to see who gets past the key check."""
    app = create_app(Settings(models_dir=Path("/nonexistent"), **settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facedemo")


def assert_unauthorized(response: httpx.Response) -> dict[str, object]:
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    for key in KEYS:
        assert key not in response.text
    return body


async def test_requests_without_a_key_are_refused(client: httpx.AsyncClient) -> None:
    models = await client.get("/models")
    predict = await client.post(
        "/predict", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
    )
    unknown = await client.get("/no-such-path")

    assert "X-API-Key" in assert_unauthorized(models)["detail"]  # type: ignore[operator]
    assert_unauthorized(predict)
    assert_unauthorized(unknown)  # 401 before 404: no probing for routes without a key


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "alpha-7f3c9e2b41d"},  # one character short
        {"X-API-Key": ""},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Basic {KEYS[0]}"},  # the right key, but not as a bearer token
        {"Authorization": "Bearer "},
    ],
    ids=["near-miss", "empty", "wrong-bearer", "basic-scheme", "empty-bearer"],
)
async def test_wrong_keys_are_refused(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert_unauthorized(await client.get("/models", headers=headers))


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEYS[0]},
        {"X-API-Key": KEYS[1]},
        {"Authorization": f"Bearer {KEYS[0]}"},
        {"authorization": f"bearer {KEYS[1]}"},
    ],
    ids=["header-first-key", "header-second-key", "bearer", "bearer-lower-case"],
)
async def test_every_configured_key_works_either_way(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    models = await client.get("/models", headers=headers)
    predict = await client.post(
        "/predict",
        params={"detect": "skip"},
        headers=headers,
        files={"file": ("face.png", image_bytes("PNG"), "image/png")},
    )

    assert models.status_code == 200
    assert predict.status_code == 200, predict.text


async def test_probes_are_always_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/livez")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


DOCS = ["/docs", "/redoc", "/openapi.json", "/", "/static/app.js"]


@pytest.mark.parametrize("path", DOCS)
async def test_docs_and_demo_need_a_key_by_default(client: httpx.AsyncClient, path: str) -> None:
    assert_unauthorized(await client.get(path))
    assert (await client.get(path, headers={"X-API-Key": KEYS[0]})).status_code != 401


async def test_docs_can_be_left_open() -> None:
    async with unloaded_client(api_keys=KEYS[0], api_keys_protect_docs=False) as client:
        docs = [await client.get(path) for path in ("/docs", "/redoc", "/openapi.json")]
        models = await client.get("/models")

    assert [response.status_code for response in docs] == [200, 200, 200]
    assert_unauthorized(models)


async def test_metrics_follow_their_own_setting() -> None:
    async with unloaded_client(api_keys=KEYS[0]) as protected:
        refused = await protected.get("/metrics")
    async with unloaded_client(api_keys=KEYS[0], api_keys_protect_metrics=False) as open_metrics:
        passed = await open_metrics.get("/metrics")

    assert_unauthorized(refused)
    assert passed.status_code != 401  # handed to the application, whatever it serves there


async def test_without_keys_everything_is_open() -> None:
    async with unloaded_client() as client:
        responses = [await client.get(path) for path in ("/models", "/docs", "/metrics")]

    assert [response.status_code for response in responses] == [503, 200, 200]


async def test_the_key_check_comes_before_the_body_is_read(client: httpx.AsyncClient) -> None:
    pulled: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"--b\r\n", b"x" * 1000):
            pulled.append(chunk)
            yield chunk

    response = await client.post(
        "/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )

    assert_unauthorized(response)
    assert pulled == []


def test_a_key_is_compared_against_every_key_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = ApiKeyPolicy(Settings(api_keys=",".join(KEYS) + ",gamma-key").api_keys)
    comparisons: list[tuple[bytes, bytes]] = []
    real_compare = facedemo.api.security.hmac.compare_digest

    def counting_compare(left: bytes, right: bytes) -> bool:
        comparisons.append((left, right))
        return real_compare(left, right)

    monkeypatch.setattr(facedemo.api.security.hmac, "compare_digest", counting_compare)

    results = [policy.is_valid(KEYS[0]), policy.is_valid("gamma-key"), policy.is_valid("nope")]

    assert results == [True, True, False]
    assert len(comparisons) == 9  # three keys, three comparisons each, match or not
    assert {len(left) for left, _ in comparisons} == {32}  # digests: lengths never differ


def test_keys_come_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEDEMO_API_KEYS", f" {KEYS[0]} ,,{KEYS[1]}, ")
    settings = Settings()

    assert [key.get_secret_value() for key in settings.api_keys] == list(KEYS)
    assert KEYS[0] not in repr(settings) and KEYS[0] not in str(settings.model_dump())
    monkeypatch.setenv("FACEDEMO_API_KEYS", "")
    assert Settings().api_keys == ()


@pytest.mark.parametrize("value", [" , ", ",", ",,, ", " "])
def test_a_key_list_that_holds_no_key_is_refused_not_read_as_no_authentication(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Set, yet empty after parsing: a template that rendered nothing, a stray comma. Starting
    # with authentication off would be the silent failure.
    monkeypatch.setenv("FACEDEMO_API_KEYS", value)

    with pytest.raises(ValidationError) as raised:
        Settings()
    with pytest.raises(ValidationError):
        Settings(api_keys=value)

    [line] = describe_invalid_settings(raised.value)
    assert line.startswith("FACEDEMO_API_KEYS: holds no key, only commas or blanks")


async def test_keys_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await client.get("/models", headers={"X-API-Key": KEYS[0]})
        await client.get("/models", headers={"Authorization": f"Bearer {KEYS[1]}"})
        await client.get("/models", headers={"X-API-Key": "wrong-but-secret-guess"})

    logged = caplog.text + " ".join(str(record.__dict__) for record in caplog.records)
    assert "facedemo.access" in {record.name for record in caplog.records}
    for secret in (*KEYS, "wrong-but-secret-guess"):
        assert secret not in logged


async def test_openapi_documents_the_key_schemes_and_401s(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json", headers={"X-API-Key": KEYS[0]})).json()

    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["BearerAuth"] == {"type": "http", "scheme": "bearer"}
    predict = document["paths"]["/predict"]["post"]
    assert "401" in predict["responses"] and predict["security"]
    assert "security" not in document["paths"]["/livez"]["get"]
    assert "401" not in document["paths"]["/readyz"]["get"]["responses"]
