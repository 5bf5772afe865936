"""POST /predict/batch and Pipeline.predict_images: order, partial failure, limits, summary."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from tests.images import image_bytes
from tests.problems import assert_problem

from facedemo.api.deps import get_app_settings
from facedemo.api.problems import PROBLEM_MEDIA_TYPE
from facedemo.config import Settings
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import ImageDecodeError, UnsupportedImageFormat
from facedemo.manifest import AGE_BUCKET_LABELS
from facedemo.pipeline import Pipeline
from facedemo.schemas import PROBLEM_TYPE_BASE, BatchPredictResponse, PredictResponse

if TYPE_CHECKING:
    from facedemo.api.state import ServiceState
    from facedemo.head_combination import FacePredictions
    from facedemo.registry import Registry

pytestmark = pytest.mark.anyio

TEXT = b"name,salary\nalice,123456\n"
PDF = b"%PDF-1.7\n%\xe2\xe3\n1 0 obj\n"

Upload = tuple[str, tuple[str, bytes, str]]


def png(height: int, width: int, seed: int) -> Upload:
    return ("files", (f"photo-{seed}.png", image_bytes("PNG", height, width, seed), "image/png"))


def jpeg(height: int, width: int, seed: int) -> Upload:
    return ("files", (f"photo-{seed}.jpg", image_bytes("JPEG", height, width, seed), "image/jpeg"))


async def post_batch(
    client: httpx.AsyncClient,
    uploads: list[Upload],
    detect: str = "skip",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The 200 answer to `uploads`; detect=skip because the tiny test photos hold no real face."""
    response = await client.post(
        "/predict/batch", files=uploads, params={"detect": detect}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    BatchPredictResponse.model_validate(body)
    return body


# ----------------------------------------------------------------------------- the endpoint


async def test_items_keep_upload_order_and_bad_files_fail_alone(client: httpx.AsyncClient) -> None:
    uploads = [
        png(30, 40, seed=1),
        ("files", ("notes.txt", TEXT, "text/plain")),
        jpeg(48, 64, seed=2),
        ("files", ("doc.pdf", PDF, "application/pdf")),
        png(20, 20, seed=3),
    ]

    body = await post_batch(client, uploads, headers={"X-Request-ID": "batch-order-1"})

    items = body["items"]
    assert [item["index"] for item in items] == [0, 1, 2, 3, 4]
    assert [item["filename"] for item in items] == [
        "photo-1.png",
        "notes.txt",
        "photo-2.jpg",
        "doc.pdf",
        "photo-3.png",
    ]
    assert [item["image"] for item in (items[0], items[2], items[4])] == [
        {"width": 40, "height": 30},
        {"width": 64, "height": 48},
        {"width": 20, "height": 20},
    ]
    undecodable, unsupported = items[1]["error"], items[3]["error"]
    assert "faces" not in items[1] and "faces" not in items[3]
    assert (undecodable["status"], undecodable["code"]) == (400, "image_undecodable")
    assert undecodable["type"] == PROBLEM_TYPE_BASE + "image_undecodable"
    assert undecodable["title"] == ImageDecodeError.title
    assert undecodable["detail"] and "salary" not in undecodable["detail"]
    assert undecodable["instance"] == "/predict/batch"
    assert (unsupported["status"], unsupported["code"]) == (415, "unsupported_image_format")
    assert unsupported["title"] == UnsupportedImageFormat.title
    assert body["summary"]["images"] == {"ok": 3, "failed": 2}
    assert body["summary"]["faces"] == 3
    assert body["request_id"] == "batch-order-1"  # the access log's, as for /predict
    assert sorted(model["name"] for model in body["models"]) == [
        "age-gender-classifier",
        "age-regressor",
    ]


async def test_each_image_gets_what_predict_gives_it(client: httpx.AsyncClient) -> None:
    uploads = [png(30, 40, seed=4), jpeg(48, 64, seed=5), png(24, 24, seed=6)]

    body = await post_batch(client, uploads)

    for item, (_, (name, data, content_type)) in zip(body["items"], uploads, strict=True):
        single = await client.post(
            "/predict", params={"detect": "skip"}, files={"file": (name, data, content_type)}
        )
        assert single.status_code == 200
        assert item["image"] == single.json()["image"]
        assert item["faces"] == single.json()["faces"]
        assert set(item["timings_ms"]) == {"decode", "detect", "inference", "total"}


async def test_skip_gives_one_whole_image_face_per_good_image(client: httpx.AsyncClient) -> None:
    uploads = [png(30, 40, seed=7), ("files", ("bad.png", b"\x89PNG\r\n", "image/png"))]
    uploads.append(jpeg(50, 30, seed=8))

    body = await post_batch(client, uploads, detect="skip")

    good = [item for item in body["items"] if "faces" in item]
    assert [item["index"] for item in good] == [0, 2]
    for item in good:
        [face] = item["faces"]
        size = item["image"]
        assert face["box"] == {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        assert face["detection_confidence"] is None and face["landmarks"] is None


async def test_summary_matches_the_faces_it_covers(client: httpx.AsyncClient) -> None:
    uploads = [png(32, 32, seed=seed) for seed in range(10, 16)]
    uploads.insert(3, ("files", ("broken.jpg", TEXT, "image/jpeg")))

    body = await post_batch(client, uploads)

    faces = [face for item in body["items"] if "faces" in item for face in item["faces"]]
    ages = [face["age"]["years"] for face in faces]
    males = sum(face["gender"]["label"] == "male" for face in faces)
    summary = body["summary"]
    assert summary["faces"] == len(faces) == 6
    assert summary["images"] == {"ok": 6, "failed": 1}
    assert summary["mean_age"] == pytest.approx(round(sum(ages) / 6, 1), abs=1e-9)
    assert summary["median_age"] == pytest.approx(round(statistics.median(ages), 1), abs=1e-9)
    assert summary["gender_shares"] == {
        "male": pytest.approx(round(males / 6, 4)),
        "female": pytest.approx(round((6 - males) / 6, 4)),
    }
    assert list(summary["bucket_histogram"]) == list(AGE_BUCKET_LABELS)
    assert summary["bucket_histogram"] == {
        label: sum(face["age"]["bucket"] == label for face in faces) for label in AGE_BUCKET_LABELS
    }


async def test_a_batch_of_only_bad_files_is_answered_with_an_empty_summary(
    client: httpx.AsyncClient,
) -> None:
    uploads = [("files", ("a.txt", TEXT, "text/plain")), ("files", ("b.pdf", PDF, "image/png"))]

    body = await post_batch(client, uploads)

    assert [item["error"]["code"] for item in body["items"]] == [
        "image_undecodable",
        "unsupported_image_format",
    ]
    assert body["summary"] == {
        "faces": 0,
        "images": {"ok": 0, "failed": 2},
        "mean_age": None,
        "median_age": None,
        "gender_shares": None,
        "bucket_histogram": dict.fromkeys(AGE_BUCKET_LABELS, 0),
    }


async def test_the_byte_limit_applies_to_each_file(
    client: httpx.AsyncClient, ready_app: FastAPI, tiny_models_dir: Path
) -> None:
    small = image_bytes("PNG", 16, 16, seed=20)
    large = image_bytes("PNG", 64, 64, seed=21)
    assert len(small) < len(large)
    ready_app.dependency_overrides[get_app_settings] = lambda: Settings(
        models_dir=tiny_models_dir, max_upload_bytes=len(small)
    )
    try:
        uploads = [
            ("files", ("small.png", small, "image/png")),
            ("files", ("large.png", large, "image/png")),
            ("files", ("small-again.png", small, "image/png")),
        ]
        body = await post_batch(client, uploads)
    finally:
        ready_app.dependency_overrides.clear()

    first, too_large, last = body["items"]
    assert len(first["faces"]) == len(last["faces"]) == 1
    assert too_large["error"]["code"] == "upload_too_large"
    assert too_large["error"]["status"] == 413
    assert str(len(small)) in too_large["error"]["detail"]
    assert body["summary"]["images"] == {"ok": 2, "failed": 1}


async def test_an_empty_file_fails_alone(client: httpx.AsyncClient) -> None:
    uploads = [png(16, 16, seed=22), ("files", ("empty.png", b"", "image/png")), png(8, 8, seed=23)]

    body = await post_batch(client, uploads)

    first, empty, last = body["items"]
    assert len(first["faces"]) == len(last["faces"]) == 1
    assert empty["error"]["status"] == 400
    assert empty["filename"] == "empty.png"


async def test_too_many_files_is_refused_before_any_is_decoded(
    client: httpx.AsyncClient,
    ready_app: FastAPI,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state: ServiceState = ready_app.state.service
    calls: list[object] = []

    async def recording(*args: object) -> None:
        calls.append(args)

    monkeypatch.setattr(state.serving, "predict_images", recording)
    ready_app.dependency_overrides[get_app_settings] = lambda: Settings(
        models_dir=tiny_models_dir, max_batch_images=2
    )
    try:
        response = await client.post(
            "/predict/batch", files=[png(16, 16, seed=seed) for seed in range(3)]
        )
    finally:
        ready_app.dependency_overrides.clear()

    body = assert_problem(response, 413, "too_many_files")
    assert body["type"] == PROBLEM_TYPE_BASE + "too_many_files"
    assert "3 files" in body["detail"] and "at most 2" in body["detail"]
    assert body["instance"] == "/predict/batch"
    assert calls == []


async def test_the_default_limit_is_32_files(client: httpx.AsyncClient) -> None:
    assert Settings().max_batch_images == 32
    tiny = image_bytes("PNG", 8, 8, seed=30)

    response = await client.post(
        "/predict/batch", files=[("files", (f"{i}.png", tiny, "image/png")) for i in range(33)]
    )

    assert_problem(response, 413, "too_many_files")


@pytest.mark.parametrize(
    ("params", "expected"),
    [({}, DEFAULT_DETECT_MODE), ({"detect": "skip"}, DetectMode.SKIP)],
    ids=["default", "skip"],
)
async def test_the_detect_mode_reaches_the_pipeline(
    client: httpx.AsyncClient,
    ready_app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    params: dict[str, str],
    expected: DetectMode,
) -> None:
    state: ServiceState = ready_app.state.service
    assert state.serving is not None
    predict_images = state.serving.predict_images
    modes: list[DetectMode] = []

    async def recording(
        images: list[bytes], detect: DetectMode, age_thresholds: object = None
    ) -> list[PredictResponse | Any]:
        modes.append(detect)
        return await predict_images(images, DetectMode.SKIP)

    monkeypatch.setattr(state.serving, "predict_images", recording)
    response = await client.post("/predict/batch", params=params, files=[png(16, 16, seed=9)])

    assert response.status_code == 200, response.text
    assert modes == [expected]


async def test_zero_files_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    # A multipart body with a plain form field and no file part.
    response = await client.post("/predict/batch", files=[("note", (None, b"no photos"))])

    body = assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in body["errors"]] == [["body", "files"]]


async def test_unknown_detect_mode_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict/batch", params={"detect": "banana"}, files=[png(16, 16, seed=1)]
    )

    body = assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in body["errors"]] == [["query", "detect"]]


async def test_openapi_documents_the_batch_route(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/predict/batch"]["post"]
    assert operation["summary"] == (
        "Estimate age and gender for the faces in several images, with a crowd summary"
    )
    assert {"200", "400", "413", "415", "422", "500", "503"} <= set(operation["responses"])
    assert "too_many_files" in operation["responses"]["413"]["description"]
    # A bad image is answered in its item: 400 is about the body, not about images.
    assert "image" not in operation["responses"]["400"]["description"]
    for status in ("400", "413", "415", "422", "500", "503"):
        assert list(operation["responses"][status]["content"]) == [PROBLEM_MEDIA_TYPE]
    body_schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    body_fields = document["components"]["schemas"][body_schema["$ref"].split("/")[-1]]
    assert body_fields["properties"]["files"]["type"] == "array"
    assert body_fields["required"] == ["files"]
    [example] = document["components"]["schemas"]["BatchPredictResponse"]["examples"]
    BatchPredictResponse.model_validate(example)
    assert any("error" in item for item in example["items"])


# ----------------------------------------------------------------------------- the pipeline


class CountingRegistry:
    """A registry that records the size of every batch it predicts."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.batch_sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def predict(self, crops: np.ndarray) -> FacePredictions:
        self.batch_sizes.append(len(crops))
        return self._registry.predict(crops)


def test_predict_images_runs_one_model_call_for_all_faces(
    tiny_registry: Registry, tiny_models_dir: Path
) -> None:
    registry = CountingRegistry(tiny_registry)
    pipeline = Pipeline(registry, Settings(models_dir=tiny_models_dir))  # type: ignore[arg-type]
    images = [
        image_bytes("PNG", 30, 40, seed=40),
        TEXT,
        image_bytes("JPEG", 48, 64, seed=41),
        image_bytes("PNG", 24, 24, seed=42),
    ]

    outcomes = pipeline.predict_images(images, DetectMode.SKIP)

    assert registry.batch_sizes == [3]
    assert [type(outcome) for outcome in outcomes] == [
        PredictResponse,
        ImageDecodeError,
        PredictResponse,
        PredictResponse,
    ]
    singles = [pipeline.predict_image(data, DetectMode.SKIP) for data in images if data != TEXT]
    assert registry.batch_sizes == [3, 1, 1, 1]
    batched = [outcome for outcome in outcomes if isinstance(outcome, PredictResponse)]
    for batch_result, single_result in zip(batched, singles, strict=True):
        assert batch_result.image == single_result.image
        assert batch_result.faces == single_result.faces
        assert batch_result.timings_ms.total >= batch_result.timings_ms.inference


def test_predict_images_of_only_bad_bytes_still_answers_each(
    tiny_registry: Registry, tiny_models_dir: Path
) -> None:
    pipeline = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir))

    outcomes = pipeline.predict_images([TEXT, PDF])

    assert [type(outcome) for outcome in outcomes] == [ImageDecodeError, UnsupportedImageFormat]
    assert pipeline.predict_images([]) == []
