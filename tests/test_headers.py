"""Response headers a security review looks for (api/headers.py), and no redirect built from Host.

Every answer, errors included, carries nosniff, no referrer, no framing, a Content-Security-Policy
and a Cache-Control; `facedemo serve` sends no `server` banner.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.images import image_bytes
from tests.in_process import running
from tests.problems import assert_problem
from tests.served import Served

from facedemo.api import create_app
from facedemo.api.headers import API_POLICY, BASELINE_HEADERS, DEMO_PAGE_POLICY
from facedemo.config import Settings

pytestmark = pytest.mark.anyio

KEY = "headers-key-81c4"


def assert_baseline(response: httpx.Response) -> None:
    for name, value in BASELINE_HEADERS.items():
        assert response.headers.get_list(name) == [value], (response.url, name)
    assert "content-security-policy" in response.headers, response.url
    assert "cache-control" in response.headers, response.url


async def test_every_kind_of_answer_carries_the_headers(client: httpx.AsyncClient) -> None:
    answers = {
        "ok": await client.get("/livez"),
        "prediction": await client.post(
            "/predict?detect=skip", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
        ),
        "bad upload": await client.post(
            "/predict", files={"file": ("notes.png", b"name,salary\n", "image/png")}
        ),
        "unknown path": await client.get("/no-such-path"),
        "wrong method": await client.get("/predict"),
        "page": await client.get("/"),
        "asset": await client.get("/static/app.js"),
    }

    for response in answers.values():
        assert_baseline(response)
    assert answers["prediction"].status_code == 200
    assert answers["bad upload"].status_code == 400
    assert answers["unknown path"].status_code == 404
    assert answers["wrong method"].status_code == 405


async def test_answers_are_not_cached_but_assets_are_revalidated(
    client: httpx.AsyncClient,
) -> None:
    prediction = await client.post(
        "/predict?detect=skip", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
    )
    asset = await client.get("/static/style.css")
    refusal = await client.get("/no-such-path")

    # The answers describe people's photos: no cache (a proxy's, a browser's) may keep them.
    assert prediction.headers["cache-control"] == "no-store"
    assert refusal.headers["cache-control"] == "no-store"
    assert asset.headers["cache-control"] == "no-cache"


async def test_json_answers_may_load_nothing_and_pages_keep_their_own_policy(
    client: httpx.AsyncClient,
) -> None:
    models = await client.get("/models")
    page = await client.get("/")
    docs = await client.get("/docs")

    assert models.headers["content-security-policy"] == API_POLICY
    assert "default-src 'none'" in API_POLICY and "frame-ancestors 'none'" in API_POLICY
    assert page.headers.get_list("content-security-policy") == [DEMO_PAGE_POLICY]
    [docs_policy] = docs.headers.get_list("content-security-policy")
    assert "script-src 'self' 'sha256-" in docs_policy
    for policy in (DEMO_PAGE_POLICY, docs_policy):
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy


@pytest.fixture
async def failing_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app with a route that fails unexpectedly, and API keys on."""
    app: FastAPI = create_app(Settings(models_dir=tmp_path, api_keys=(KEY,)))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    async with running(app, raise_app_exceptions=False) as client:
        yield client


async def test_errors_answered_outside_the_routes_carry_them_too(
    failing_app: httpx.AsyncClient,
) -> None:
    server_error = await failing_app.get("/boom", headers={"X-API-Key": KEY})
    unauthorized = await failing_app.get("/models")

    assert_problem(server_error, 500, "internal_error")
    assert_problem(unauthorized, 401, "unauthorized")
    assert_baseline(server_error)
    assert_baseline(unauthorized)


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/predict/", headers={"Host": "evil.example"})
    models = await client.get("/models/", headers={"Host": "evil.example"})

    assert_problem(response, 404, "not_found")
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert_problem(models, 404, "not_found")
    assert "location" not in models.headers


def test_the_server_sends_no_banner(tiny_server: Served) -> None:
    response = httpx.get(f"{tiny_server.url}/livez")

    assert response.status_code == 200
    assert "server" not in response.headers
    assert_baseline(response)
