"""Upload size limits: 413 without reading an oversized body whole, and uploads never on disk."""

from __future__ import annotations

import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.images import encode, image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem

from facedemo.api import create_app
from facedemo.api.limits import PART_ALLOWANCE_BYTES, UploadLimits
from facedemo.api.middleware import BATCH_PATH
from facedemo.config import Settings

pytestmark = pytest.mark.anyio

MEBIBYTE = 1024 * 1024
DEFAULT_LIMIT = Settings().max_upload_bytes + PART_ALLOWANCE_BYTES  # the /predict body limit
BOUNDARY = "facedemo-limit-test"
PART_HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="huge.jpg"\r\n'
    "Content-Type: image/jpeg\r\n\r\n"
).encode()
MULTIPART_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


class EndlessUpload:
    """A multipart body that streams `total` bytes of file data in 64 KiB chunks, and counts."""

    chunk = b"\xff" * (64 * 1024)

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.sent += len(PART_HEAD)
        yield PART_HEAD
        while self.sent < self.total:
            self.sent += len(self.chunk)
            yield self.chunk  # the same object each time: the client side allocates nothing


def encode_array(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels), "PNG")


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict",
        params={"detect": "skip"},
        files={"file": ("face.png", image_bytes("PNG"), "image/png")},
    )
    assert response.status_code == 200, response.text


def test_the_body_limit_rule() -> None:
    limits = UploadLimits(1000, {BATCH_PATH: 8})

    assert limits.body_limit("/predict") == 1000 + PART_ALLOWANCE_BYTES
    assert limits.body_limit("/models") == 1000 + PART_ALLOWANCE_BYTES
    assert limits.body_limit(BATCH_PATH) == 8 * (1000 + PART_ALLOWANCE_BYTES)
    assert limits.largest_body_limit == limits.body_limit(BATCH_PATH)


async def test_a_declared_oversized_body_is_refused_before_a_byte_is_read(
    client: httpx.AsyncClient,
) -> None:
    body = EndlessUpload(50 * MEBIBYTE)
    headers = {**MULTIPART_HEADERS, "content-length": str(50 * MEBIBYTE)}

    response = await client.post("/predict", content=body, headers=headers)

    problem = assert_problem(response, 413, "upload_too_large")
    assert str(DEFAULT_LIMIT) in problem["detail"]
    assert response.headers["connection"] == "close"
    assert body.sent == 0
    await assert_still_serving(client)


@pytest.mark.parametrize(
    "declared_length",
    [None, "1000"],
    ids=["chunked-without-content-length", "lying-content-length"],
)
async def test_a_50_mb_stream_is_refused_once_past_the_limit_without_growing_memory(
    client: httpx.AsyncClient, declared_length: str | None
) -> None:
    body = EndlessUpload(50 * MEBIBYTE)
    headers = dict(MULTIPART_HEADERS)
    if declared_length is not None:
        headers["content-length"] = declared_length

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        response = await client.post("/predict", content=body, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert_problem(response, 413, "upload_too_large")
    # Reading stopped one chunk past the limit, far short of the 50 MB on offer...
    assert DEFAULT_LIMIT < body.sent <= DEFAULT_LIMIT + 2 * len(EndlessUpload.chunk)
    # ...and what was read is all the memory the request took.
    assert peak - before < 20 * MEBIBYTE
    await assert_still_serving(client)


async def test_uploads_stay_in_memory_even_above_starlettes_spool_size(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starlette spools file parts over 1 MiB to a temporary file unless told otherwise.
    to_disk: list[Any] = []
    real_temporary_file = tempfile.TemporaryFile

    def recording_temporary_file(*args: Any, **kwargs: Any) -> Any:
        to_disk.append(args)
        return real_temporary_file(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording_temporary_file)
    limit = 4 * MEBIBYTE
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    image = encode_array(noise)
    assert 2.5 * MEBIBYTE < len(image) < limit
    app = create_app(Settings(models_dir=tiny_models_dir, max_upload_bytes=limit))

    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        fits = await client.post(
            "/predict", params={"detect": "skip"}, files={"file": ("noise.png", image, "image/png")}
        )
        # Over max_upload_bytes but inside the multipart allowance: parsed, then refused.
        over = await client.post(
            "/predict",
            files={"file": ("x.png", b"\x00" * (limit + PART_ALLOWANCE_BYTES // 2), "image/png")},
        )

    assert fits.status_code == 200, fits.text
    assert_problem(over, 413, "upload_too_large")
    assert to_disk == []
    # The spy sees a spool that does roll over, so its silence above means something.
    with tempfile.SpooledTemporaryFile(max_size=10) as spool:
        spool.write(b"x" * 11)
    assert len(to_disk) == 1


async def test_a_batch_may_carry_more_bytes_than_a_single_upload(tiny_models_dir: Path) -> None:
    limit = 50_000
    images = [
        encode_array(np.random.default_rng(seed).integers(0, 256, (90, 90, 3), dtype=np.uint8))
        for seed in range(3)
    ]
    assert all(limit * 0.4 < len(image) <= limit for image in images)
    app = create_app(Settings(models_dir=tiny_models_dir, max_upload_bytes=limit))
    files = [("files", (f"{index}.png", image, "image/png")) for index, image in enumerate(images)]

    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        batch = await client.post(BATCH_PATH, params={"detect": "skip"}, files=files)
        # The same bytes as one file to /predict pass that route's body limit.
        single = await client.post(
            "/predict", files={"file": ("all.png", b"".join(images), "image/png")}
        )

    assert batch.status_code == 200, batch.text
    assert_problem(single, 413, "upload_too_large")
    assert "request body" in single.json()["detail"]  # the middleware's answer, not the route's
