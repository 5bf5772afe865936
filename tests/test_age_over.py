"""Age checks through the API: `age.over` for the configured thresholds, or the request's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem

from facedemo.age_thresholds import DEFAULT_AGE_THRESHOLDS
from facedemo.api import create_app
from facedemo.config import Settings

pytestmark = pytest.mark.anyio

FACE = {"file": ("face.png", image_bytes("PNG"), "image/png")}


async def test_every_face_carries_the_configured_age_checks(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", params={"detect": "skip"}, files=FACE)

    assert response.status_code == 200, response.text
    age = response.json()["faces"][0]["age"]
    assert list(age["over"]) == [str(t) for t in DEFAULT_AGE_THRESHOLDS]
    over = list(age["over"].values())
    assert all(0.0 <= p <= 1.0 for p in over)
    assert over == sorted(over, reverse=True)  # the older the threshold, the less probable


async def test_a_request_asks_for_its_own_thresholds(client: httpx.AsyncClient) -> None:
    params = [("detect", "skip"), ("age_over", "30"), ("age_over", "18"), ("age_over", "18")]
    single = await client.post("/predict", params=params, files=FACE)
    batch = await client.post(
        "/predict/batch", params=params, files=[("files", FACE["file"]), ("files", FACE["file"])]
    )

    assert single.status_code == 200 and batch.status_code == 200, (single.text, batch.text)
    assert list(single.json()["faces"][0]["age"]["over"]) == ["18", "30"]
    for item in batch.json()["items"]:
        assert list(item["faces"][0]["age"]["over"]) == ["18", "30"]


@pytest.mark.parametrize(
    "values", [["0"], ["121"], ["eighteen"], [str(t) for t in range(10, 19)]], ids=str
)
async def test_thresholds_out_of_bounds_are_a_validation_problem(
    client: httpx.AsyncClient, values: list[str]
) -> None:
    params = [("detect", "skip")] + [("age_over", value) for value in values]
    response = await client.post("/predict", params=params, files=FACE)

    body = assert_problem(response, 422, "validation_error")
    assert all(issue["loc"][:2] == ["query", "age_over"] for issue in body["errors"])


async def test_the_setting_chooses_the_default_thresholds(tiny_models_dir: Path) -> None:
    settings = Settings(models_dir=tiny_models_dir, device="cpu", age_thresholds="21,16")
    async with running(create_app(settings)) as client:
        assert (await settled_readiness(client)).status_code == 200
        response = await client.post("/predict", params={"detect": "skip"}, files=FACE)

    assert list(response.json()["faces"][0]["age"]["over"]) == ["16", "21"]
