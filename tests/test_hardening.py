"""Every bad input to POST /predict gets its own 4xx problem, and the service stays up.

Each case asserts the status, that the body is application/problem+json with the stable `code`,
and that the next good request still gets a 200. Odd but valid images (1x1, 16-bit, CMYK,
palette, LA, I;16, animated) are predicted.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from tests.images import (
    BLUE,
    RED,
    cmyk_jpeg,
    encode,
    handmade_png,
    image_bytes,
    noisy_image,
    row_image,
    sixteen_bit_rgb_png,
    transparent_palette_png,
    two_colour_image,
)
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem
from tests.refused_images import (
    UNSUPPORTED,
    jpeg_declaring,
    jpeg_with_garbage,
    png_declaring_rows,
    png_with_bad_checksum,
    truncated,
)

import facedemo.imaging
from facedemo.api import create_app
from facedemo.config import Settings
from facedemo.imaging import ACCEPTED_FORMAT_NAMES

pytestmark = pytest.mark.anyio

MAX_IMAGE_PIXELS = 1_000_000
MAX_BATCH_IMAGES = 3
SKIP = {"detect": "skip"}  # every image here is taken as one face crop


@pytest.fixture(scope="module")
def app(tiny_models_dir: Path) -> FastAPI:
    return create_app(
        Settings(
            models_dir=tiny_models_dir,
            max_image_pixels=MAX_IMAGE_PIXELS,
            max_batch_images=MAX_BATCH_IMAGES,
        )
    )


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        yield client


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    """A good request right after a bad one is answered normally."""
    response = await client.post(
        "/predict", params=SKIP, files={"file": ("face.png", image_bytes("PNG"), "image/png")}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["faces"]) == 1


def upload(data: bytes, filename: str = "face.jpg", content_type: str = "image/jpeg") -> Any:
    return {"files": {"file": (filename, data, content_type)}}


def raw_body(data: bytes, content_type: str | None) -> Any:
    headers = {} if content_type is None else {"content-type": content_type}
    return {"content": data, "headers": headers}


@dataclass(frozen=True)
class BadInput:
    request: Callable[[], dict[str, Any]]
    status: int
    code: str
    params: dict[str, str] = field(default_factory=lambda: dict(SKIP))


BOUNDARY = "facedemo-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"

BAD_INPUTS = {
    "no-file-field": BadInput(
        lambda: {"files": {"photo": ("face.png", image_bytes("PNG"), "image/png")}},
        422,
        "validation_error",
    ),
    "two-files-in-the-file-field": BadInput(
        lambda: {
            "files": [
                ("file", ("a.png", image_bytes("PNG", seed=1), "image/png")),
                ("file", ("b.png", image_bytes("PNG", seed=2), "image/png")),
            ]
        },
        413,
        "too_many_files",
    ),
    "empty-body-without-content-type": BadInput(
        lambda: raw_body(b"", None), 415, "unsupported_media_type"
    ),
    "empty-multipart-body": BadInput(lambda: raw_body(b"", MULTIPART), 422, "validation_error"),
    "zero-byte-file": BadInput(lambda: upload(b""), 400, "empty_file"),
    "text-named-jpg": BadInput(
        lambda: upload(b"just some notes\nnot a photo\n"), 400, "image_undecodable"
    ),
    "random-bytes-named-jpg": BadInput(
        lambda: upload(np.random.default_rng(3).bytes(5000)), 400, "image_undecodable"
    ),
    "truncated-jpeg": BadInput(
        lambda: upload(truncated(encode(two_colour_image((64, 48)), "JPEG"), 0.6)),
        400,
        "image_truncated",
    ),
    "jpeg-1000x1000-header-over-a-few-rows": BadInput(
        lambda: upload(jpeg_declaring((1000, 1000), encode(noisy_image((64, 16)), "JPEG"))),
        400,
        "image_truncated",
    ),
    "jpeg-cut-then-eoi": BadInput(
        lambda: upload(truncated(encode(noisy_image(), "JPEG"), 0.5) + b"\xff\xd9"),
        400,
        "image_truncated",
    ),
    "jpeg-corrupt-entropy-coded-data": BadInput(
        lambda: upload(jpeg_with_garbage()), 400, "image_corrupt"
    ),
    "png-with-bad-crc": BadInput(
        lambda: upload(png_with_bad_checksum(b"IDAT"), "face.png", "image/png"),
        400,
        "image_corrupt",
    ),
    "png-1000x1000-header-over-three-rows": BadInput(
        lambda: upload(png_declaring_rows(3, 1000), "face.png", "image/png"),
        400,
        "image_truncated",
    ),
    "truncated-webp": BadInput(
        lambda: upload(truncated(encode(noisy_image(), "WEBP"), 0.6), "face.webp", "image/webp"),
        400,
        "image_truncated",
    ),
    "truncated-gif-with-its-trailer": BadInput(
        lambda: upload(
            truncated(encode(noisy_image(), "GIF"), 0.6) + b"\x00;", "face.gif", "image/gif"
        ),
        400,
        "image_truncated",
    ),
    "truncated-tiff": BadInput(
        lambda: upload(truncated(encode(noisy_image(), "TIFF"), 0.6), "face.tif", "image/tiff"),
        400,
        "image_truncated",
    ),
    "decompression-bomb": BadInput(
        lambda: upload(handmade_png(30_000, 30_000, 1, 0, b"\x00"), "bomb.png", "image/png"),
        413,
        "image_too_large",
    ),
    "over-the-pixel-limit": BadInput(
        lambda: upload(encode(Image.new("L", (1001, 1000)), "PNG"), "big.png", "image/png"),
        413,
        "image_too_large",
    ),
    "text-plain-body": BadInput(
        lambda: raw_body(b"hello", "text/plain"), 415, "unsupported_media_type"
    ),
    "json-body": BadInput(lambda: {"json": {"file": "aGVsbG8="}}, 415, "unsupported_media_type"),
    "multipart-mixed": BadInput(
        lambda: raw_body(f"--{BOUNDARY}--\r\n".encode(), f"multipart/mixed; boundary={BOUNDARY}"),
        415,
        "unsupported_media_type",
    ),
    "multipart-without-boundary": BadInput(
        lambda: raw_body(b"--x\r\n\r\n--x--\r\n", "multipart/form-data"), 400, "malformed_multipart"
    ),
    "multipart-garbage": BadInput(
        lambda: raw_body(b"this is not multipart framing", MULTIPART), 400, "malformed_multipart"
    ),
    "part-without-a-name": BadInput(
        lambda: raw_body(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\n'
            f"xyz\r\n--{BOUNDARY}--\r\n".encode(),
            MULTIPART,
        ),
        400,
        "malformed_multipart",
    ),
    "unknown-detect-mode": BadInput(
        lambda: upload(image_bytes("PNG"), "face.png", "image/png"),
        422,
        "validation_error",
        params={"detect": "banana"},
    ),
}


async def test_too_many_files_in_a_batch_is_refused(client: httpx.AsyncClient) -> None:
    def files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
        return [
            ("files", (f"{index}.png", image_bytes("PNG", seed=index), "image/png"))
            for index in range(count)
        ]

    too_many = await client.post("/predict/batch", params=SKIP, files=files(MAX_BATCH_IMAGES + 1))
    at_the_limit = await client.post("/predict/batch", params=SKIP, files=files(MAX_BATCH_IMAGES))

    assert str(MAX_BATCH_IMAGES) in assert_problem(too_many, 413, "too_many_files")["detail"]
    assert at_the_limit.status_code == 200, at_the_limit.text
    await assert_still_serving(client)


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
async def test_bad_input_gets_its_problem_and_the_service_stays_up(
    client: httpx.AsyncClient, case: BadInput
) -> None:
    response = await client.post("/predict", params=case.params, **case.request())

    body = assert_problem(response, case.status, case.code)
    assert body["instance"] == "/predict"
    await assert_still_serving(client)


async def test_validation_problems_name_the_missing_field_and_the_bad_parameter(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.post("/predict", params=SKIP, **BAD_INPUTS["no-file-field"].request())
    banana = await client.post("/predict", params={"detect": "banana"}, **upload(b"x"))

    assert [issue["loc"] for issue in missing.json()["errors"]] == [["body", "file"]]
    assert [issue["loc"] for issue in banana.json()["errors"]] == [["query", "detect"]]


async def test_problem_details_never_echo_the_upload(client: httpx.AsyncClient) -> None:
    secret = b"patient 4711: private notes, not an image"
    responses = [
        await client.post("/predict", params=SKIP, **upload(secret)),
        await client.post("/predict", params=SKIP, **raw_body(secret, "text/plain")),
        await client.post("/predict", params=SKIP, **raw_body(secret, MULTIPART)),
    ]

    assert [response.status_code for response in responses] == [400, 415, 400]
    for response in responses:
        assert "4711" not in response.text and "private" not in response.text


# The same bytes as imaging's own test of them, sent over HTTP.
REFUSED_FORMATS = {
    name: UNSUPPORTED[name]
    for name in ("svg", "pdf", "eps", "ico", "tga", "pcx", "ppm", "sgi", "qoi")
}


@pytest.mark.parametrize("data", REFUSED_FORMATS.values(), ids=REFUSED_FORMATS.keys())
async def test_formats_off_the_list_are_refused_without_reaching_a_decoder(
    client: httpx.AsyncClient, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[bytes] = []
    real_open = Image.open

    def spying_open(source: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(source.getvalue()[:8])
        return real_open(source, *args, **kwargs)

    monkeypatch.setattr(facedemo.imaging.Image, "open", spying_open)
    response = await client.post("/predict", params=SKIP, **upload(data, "image.jpg"))

    body = assert_problem(response, 415, "unsupported_image_format")
    assert body["detail"].endswith(f"not an accepted image format; send {ACCEPTED_FORMAT_NAMES}")
    assert opened == []  # neither Pillow nor a delegate (Ghostscript, a rasteriser) saw it
    await assert_still_serving(client)
    assert opened  # the spy works: the good image went through it (priced, then decoded)


def frames_image(image_format: str, sizes: list[tuple[int, int]], colours: list[Any]) -> bytes:
    frames = [Image.new("RGB", size, colour) for size, colour in zip(sizes, colours, strict=True)]
    buffer = io.BytesIO()
    frames[0].save(buffer, image_format, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


ODD_BUT_VALID = {
    "1x1-jpeg": (lambda: encode(Image.new("RGB", (1, 1), RED), "JPEG"), (1, 1)),
    "1x1-png": (lambda: encode(Image.new("RGB", (1, 1), RED), "PNG"), (1, 1)),
    "2x2-png": (lambda: encode(Image.new("RGB", (2, 2), BLUE), "PNG"), (2, 2)),
    "16-bit-rgb-png": (sixteen_bit_rgb_png, (2, 1)),
    "cmyk-jpeg": (cmyk_jpeg, (16, 16)),
    "palette-png": (transparent_palette_png, (2, 1)),
    "la-png": (lambda: encode(row_image("LA", [(0, 0), (0, 255), (0, 128)]), "PNG"), (3, 1)),
    "i16-png": (lambda: encode(row_image("I;16", [0, 32896, 65535]), "PNG"), (3, 1)),
}


@pytest.mark.parametrize(("make", "size"), ODD_BUT_VALID.values(), ids=ODD_BUT_VALID.keys())
async def test_odd_but_valid_images_are_predicted(
    client: httpx.AsyncClient, make: Callable[[], bytes], size: tuple[int, int]
) -> None:
    response = await client.post("/predict", params=SKIP, **upload(make(), "image"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["image"]["width"], body["image"]["height"]) == size
    assert len(body["faces"]) == 1


@pytest.mark.parametrize("image_format", ["GIF", "TIFF"])
async def test_multi_frame_images_are_predicted_from_their_first_frame(
    client: httpx.AsyncClient, image_format: str
) -> None:
    sizes, colours = [(40, 30), (40, 30), (40, 30)], [RED, BLUE, BLUE]
    animated = frames_image(image_format, sizes, colours)
    first = encode(Image.new("RGB", (40, 30), RED), "PNG")
    second = encode(Image.new("RGB", (40, 30), BLUE), "PNG")

    answers = [
        await client.post("/predict", params=SKIP, **upload(data, "image"))
        for data in (animated, first, second)
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    faces = [answer.json()["faces"] for answer in answers]
    assert faces[0] == faces[1]
    assert faces[1] != faces[2]  # the models tell the frames apart, so the match means something


async def test_multi_page_tiff_reports_the_first_page_size(client: httpx.AsyncClient) -> None:
    data = frames_image("TIFF", [(20, 10), (64, 64)], [RED, BLUE])

    response = await client.post("/predict", params=SKIP, **upload(data, "scan.tiff"))

    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 20, "height": 10}
