"""GET /metrics: Prometheus text that parses, counts that move, probes left out, keys respected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.metrics import scrape, value

from facedemo.api import create_app
from facedemo.api.prometheus import ServiceMetrics
from facedemo.config import Settings
from facedemo.manifest import CLASSIFIER_NAME, REGRESSOR_NAME

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def client(tiny_models_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(models_dir=tiny_models_dir))
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        yield client


async def predict(client: httpx.AsyncClient) -> httpx.Response:
    upload = {"file": ("face.png", image_bytes("PNG"), "image/png")}
    response = await client.post("/predict", params={"detect": "skip"}, files=upload)
    assert response.status_code == 200, response.text
    return response


async def test_metrics_are_served_in_the_prometheus_text_format(
    client: httpx.AsyncClient,
) -> None:
    samples = await scrape(client)
    names = {name for name, _ in samples}
    for expected in (
        "facedemo_batch_queue_faces",
        "facedemo_batch_size_faces_count",
        "facedemo_batch_queue_wait_seconds_count",
        "facedemo_model_compute_seconds_count",
        "facedemo_faces_per_image_count",
    ):
        assert expected in names
    # Info as a gauge: one series per model with its version and the device it runs on.
    info = {
        dict(labels)["name"]: dict(labels)
        for name, labels in samples
        if name == "facedemo_model_info"
    }
    assert set(info) == {CLASSIFIER_NAME, REGRESSOR_NAME}
    for labels in info.values():
        assert labels["version"] == "1.0.0"
        assert labels["device"].endswith(":0")
        assert value(samples, "facedemo_model_info", **labels) == 1.0


async def test_counts_move_after_a_prediction(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    await predict(client)
    after = await scrape(client)

    route = {"method": "POST", "route": "/predict"}
    requests = "facedemo_http_requests_total"
    assert value(after, requests, **route, status="200") == (
        value(before, requests, **route, status="200") + 1
    )
    latency = "facedemo_http_request_duration_seconds_count"
    assert value(after, latency, **route) == value(before, latency, **route) + 1
    for histogram in (
        "facedemo_batch_size_faces_count",
        "facedemo_model_compute_seconds_count",
        "facedemo_batch_queue_wait_seconds_count",
        "facedemo_faces_per_image_count",
    ):
        assert value(after, histogram) == value(before, histogram) + 1, histogram
    # detect=skip: the one image is one face, in a batch of one face.
    assert value(after, "facedemo_faces_per_image_sum") == (
        value(before, "facedemo_faces_per_image_sum") + 1
    )
    assert value(after, "facedemo_batch_size_faces_sum") == (
        value(before, "facedemo_batch_size_faces_sum") + 1
    )
    assert value(after, "facedemo_batch_queue_faces") == 0


async def test_a_batch_request_counts_each_image_s_faces(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    files = [
        ("files", (f"{seed}.png", image_bytes("PNG", seed=seed), "image/png")) for seed in (1, 2, 3)
    ]
    response = await client.post("/predict/batch", params={"detect": "skip"}, files=files)
    assert response.status_code == 200, response.text
    after = await scrape(client)
    faces = "facedemo_faces_per_image_count"
    assert value(after, faces) == value(before, faces) + 3
    batches = "facedemo_batch_size_faces_count"
    assert value(after, batches) == value(before, batches) + 1  # three images, one model call
    assert value(after, "facedemo_batch_size_faces_sum") == (
        value(before, "facedemo_batch_size_faces_sum") + 3
    )


async def test_probes_and_metrics_themselves_are_not_counted(client: httpx.AsyncClient) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/livez"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/no/such/path")).status_code == 404
    samples = await scrape(client)
    routes = {
        dict(labels).get("route")
        for name, labels in samples
        if name.startswith("facedemo_http_request")
    }
    assert not routes & {"/livez", "/readyz", "/metrics"}
    # An unknown path is one "unmatched" series, not a series per path a client makes up.
    assert "/no/such/path" not in routes
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(samples, "facedemo_http_requests_total", **unmatched) >= 1


async def test_each_app_counts_into_its_own_registry(tiny_models_dir: Path) -> None:
    first, second = (create_app(Settings(models_dir=tiny_models_dir)) for _ in range(2))
    for app in (first, second):
        assert isinstance(app.state.metrics, ServiceMetrics)
    assert first.state.metrics.registry is not second.state.metrics.registry
    async with in_process(first) as client:  # no lifespan: /models answers 503, still counted
        assert (await client.get("/models")).status_code == 503
    async with in_process(second) as client:
        samples = await scrape(client)
    assert (
        value(samples, "facedemo_http_requests_total", method="GET", route="/models", status="503")
        == 0
    )
    async with in_process(first) as client:
        samples = await scrape(client)
    assert (
        value(samples, "facedemo_http_requests_total", method="GET", route="/models", status="503")
        == 1
    )


@pytest.mark.parametrize("protect", [True, False])
async def test_metrics_follow_the_api_key_setting(tiny_models_dir: Path, protect: bool) -> None:
    settings = Settings(
        models_dir=tiny_models_dir, api_keys="secret-key", api_keys_protect_metrics=protect
    )
    async with in_process(create_app(settings)) as client:
        anonymous = await client.get("/metrics")
        keyed = await client.get("/metrics", headers={"X-API-Key": "secret-key"})
    assert keyed.status_code == 200
    assert anonymous.status_code == (401 if protect else 200)


def in_process(app: FastAPI) -> httpx.AsyncClient:
    """A client for `app` without its lifespan: enough for routes that need no models."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://facedemo")
