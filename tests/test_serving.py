"""The async side: lanes by cost, the memory budget, the deadline, cancellation and saturation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from tests.images import encode, noise_image

from facedemo.batching import BatchingPredictor
from facedemo.config import Settings
from facedemo.detect_mode import DetectMode
from facedemo.errors import DeadlineExceededError, ImageDecodeError, OverloadedError
from facedemo.pipeline import LocatedImage, Pipeline
from facedemo.schemas import PredictResponse
from facedemo.serving import Lane, MemoryBudget, Serving

if TYPE_CHECKING:
    from facedemo.registry import Registry

BIG_BUDGET = 1 << 40
# These tests use noise images as face crops; detect=auto is tested in test_detection.py.
SKIP = DetectMode.SKIP


def faces_without_timings(prediction: PredictResponse) -> tuple[object, ...]:
    return (prediction.models, prediction.image, prediction.faces)


def serving_for(
    registry: Registry,
    models_dir: Path,
    budget: MemoryBudget | None = None,
    batcher: BatchingPredictor | None = None,
    **settings: object,
) -> Serving:
    chosen = Settings(models_dir=models_dir, **settings)  # type: ignore[arg-type]
    pipeline = Pipeline(registry, chosen, batcher=batcher)
    return Serving(pipeline, chosen, budget or MemoryBudget(BIG_BUDGET), batcher, cores=1)


class HeldLocate:
    """Stands in for `Pipeline.locate`: each call blocks its thread until released."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._locate = pipeline.locate
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.stops: list[threading.Event | None] = []
        self.finished: list[bool] = []

    def __call__(
        self, data: bytes, detect: DetectMode, stop: threading.Event | None = None
    ) -> LocatedImage:
        self.stops.append(stop)
        self.started.release()
        self.release.wait(timeout=30)
        located = self._locate(data, detect, stop=stop)
        self.finished.append(True)
        return located


@pytest.fixture
def held(
    tiny_registry: Registry, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Serving, HeldLocate]]:
    serving = serving_for(tiny_registry, tiny_models_dir, request_timeout_ms=200)
    held = HeldLocate(serving.pipeline)
    monkeypatch.setattr(serving.pipeline, "locate", held)
    yield serving, held
    held.release.set()
    serving.shutdown()


# ----------------------------------------------------------------------------- answers


@pytest.mark.parametrize("batched", [False, True], ids=["registry", "batcher"])
def test_served_predictions_answer_like_the_synchronous_ones(
    tiny_registry: Registry, tiny_models_dir: Path, batched: bool
) -> None:
    batcher = BatchingPredictor(tiny_registry) if batched else None
    serving = serving_for(tiny_registry, tiny_models_dir, batcher=batcher)
    images = [encode(noise_image(40, 30, seed=seed), "PNG") for seed in (7, 8)]
    if batcher is not None:
        batcher.start()
    try:
        single = anyio.run(serving.predict_image, images[0], SKIP)
        several = anyio.run(serving.predict_images, [*images, b"not an image"], SKIP)
        expected = [serving.pipeline.predict_image(data, SKIP) for data in images]
    finally:
        serving.shutdown()
        if batcher is not None:
            batcher.stop()

    assert faces_without_timings(single) == faces_without_timings(expected[0])
    assert isinstance(several[0], PredictResponse) and isinstance(several[1], PredictResponse)
    assert [faces_without_timings(p) for p in several[:2]] == [
        faces_without_timings(p) for p in expected
    ]
    assert isinstance(several[2], ImageDecodeError)


def test_a_single_image_raises_its_imaging_error(
    tiny_registry: Registry, tiny_models_dir: Path
) -> None:
    serving = serving_for(tiny_registry, tiny_models_dir)
    with pytest.raises(ImageDecodeError):
        anyio.run(serving.predict_image, b"this is not an image", SKIP)


# ----------------------------------------------------------------------------- the deadline


def test_the_deadline_bounds_the_work_itself_and_stops_its_next_step(
    held: tuple[Serving, HeldLocate],
) -> None:
    serving, locate = held
    image = encode(noise_image(40, 30, seed=1), "PNG")
    started = time.monotonic()

    with pytest.raises(DeadlineExceededError, match="took more than 200 ms"):
        anyio.run(serving.predict_image, image, SKIP)

    assert time.monotonic() - started < 2.0  # not the 30 s the decode is held for
    [stop] = locate.stops
    assert stop is not None and stop.is_set()  # the thread will skip detection
    assert serving.saturation() is not None  # and /readyz says why, for a while


def test_work_not_started_by_its_deadline_never_starts(
    held: tuple[Serving, HeldLocate],
) -> None:
    serving, locate = held
    image = encode(noise_image(40, 30, seed=1), "PNG")

    async def scenario() -> list[object]:
        # One call per cheap thread holds them all (cores=1: 4 threads), one more waits.
        calls = [serving.predict_image(image, SKIP) for _ in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = anyio.run(scenario)

    assert all(isinstance(outcome, DeadlineExceededError) for outcome in outcomes)
    locate.release.set()
    time.sleep(0.3)
    assert len(locate.stops) == 4  # the fifth was dropped from the queue, never ran


def test_a_cancelled_request_stops_its_work(held: tuple[Serving, HeldLocate]) -> None:
    serving, locate = held
    image = encode(noise_image(40, 30, seed=1), "PNG")

    async def scenario() -> None:
        task = asyncio.ensure_future(serving.predict_image(image, SKIP))
        await anyio.to_thread.run_sync(locate.started.acquire)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    anyio.run(scenario)

    [stop] = locate.stops
    assert stop is not None and stop.is_set()


# ----------------------------------------------------------------------------- lanes and memory


def test_the_lanes_are_sized_for_the_cores_the_process_may_use(
    tiny_registry: Registry, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facedemo import serving as serving_module

    monkeypatch.setattr(serving_module, "usable_cores", lambda: 4)
    chosen = Settings(models_dir=tiny_models_dir)
    serving = Serving(Pipeline(tiny_registry, chosen), chosen, MemoryBudget(BIG_BUDGET))
    try:
        assert serving._cheap.threads == serving_module.CHEAP_THREADS_PER_CORE * 4
        assert serving._heavy.threads == 2
    finally:
        serving.shutdown()


def test_a_lane_bounds_its_queue_and_counts_threads_until_they_are_free() -> None:
    lane = Lane("test", threads=1, max_waiting=1)
    release = threading.Event()

    async def scenario() -> list[object]:
        running = asyncio.ensure_future(lane.run(release.wait, 30))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(lane.run(time.monotonic))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError, match="1 images wait for a test thread"):
            await lane.run(time.monotonic)
        assert lane.oldest_wait_seconds() > 0
        running.cancel()  # the caller gives up; its thread is still busy
        await asyncio.sleep(0.05)
        assert not waiting.done()
        release.set()
        return [await waiting]

    try:
        [finished] = anyio.run(scenario)
    finally:
        release.set()
        lane.shutdown()
    assert isinstance(finished, float)
    assert lane.oldest_wait_seconds() == 0


def test_heavy_images_do_not_hold_up_cheap_ones(
    tiny_registry: Registry, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 40x30 PNG is priced at a few kB: with heavy_decode_bytes below that it goes heavy.
    heavy_image = encode(noise_image(40, 30, seed=4), "PNG")
    cheap_image = encode(noise_image(8, 8, seed=5), "PNG")
    serving = serving_for(tiny_registry, tiny_models_dir, heavy_decode_bytes=1024)
    assert serving.pipeline.price(heavy_image, SKIP).decode_bytes > 1024
    assert serving.pipeline.price(cheap_image, SKIP).decode_bytes <= 1024
    held = HeldLocate(serving.pipeline)
    locate = held._locate

    def hold_heavy_only(
        data: bytes, detect: DetectMode, stop: threading.Event | None = None
    ) -> LocatedImage:
        if data == heavy_image:
            return held(data, detect, stop)
        return locate(data, detect, stop=stop)

    monkeypatch.setattr(serving.pipeline, "locate", hold_heavy_only)

    async def scenario() -> list[object]:
        # cores=1: one heavy thread and four waiting places; the sixth heavy image is refused.
        heavy = [asyncio.ensure_future(serving.predict_image(heavy_image, SKIP)) for _ in range(6)]
        await anyio.to_thread.run_sync(held.started.acquire)
        cheap = await serving.predict_image(cheap_image, SKIP)
        held.release.set()
        return [cheap, *await asyncio.gather(*heavy, return_exceptions=True)]

    try:
        cheap, *heavy = anyio.run(scenario)
    finally:
        held.release.set()
        serving.shutdown()

    assert isinstance(cheap, PredictResponse)
    assert sum(isinstance(outcome, PredictResponse) for outcome in heavy) == 5
    [refused] = [outcome for outcome in heavy if isinstance(outcome, OverloadedError)]
    assert "heavy-decode thread" in str(refused)


def test_decoding_is_charged_to_the_memory_budget(
    tiny_registry: Registry, tiny_models_dir: Path
) -> None:
    image = encode(noise_image(40, 30, seed=6), "PNG")
    pipeline = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir))
    price = pipeline.price(image, SKIP).decode_bytes
    budget = MemoryBudget(price + 100)
    serving = serving_for(tiny_registry, tiny_models_dir, budget=budget)
    try:
        assert isinstance(anyio.run(serving.predict_image, image, SKIP), PredictResponse)
        assert budget.reserved_bytes == 0  # given back once decoded
        held = budget.reserve(200, "another request")
        with pytest.raises(OverloadedError, match="decoding this image needs"):
            anyio.run(serving.predict_image, image, SKIP)
        held.release()
    finally:
        serving.shutdown()
    assert budget.reserved_bytes == 0


def test_a_memory_budget_grants_what_fits_and_gives_back_once() -> None:
    budget = MemoryBudget(100)
    first = budget.reserve(60, "the first")
    with pytest.raises(OverloadedError, match="the second needs 50 bytes"):
        budget.reserve(50, "the second")
    with budget.reserve(40, "the third") as third:
        with pytest.raises(OverloadedError):
            third.grow(1)
        assert (budget.reserved_bytes, third.nbytes) == (100, 40)
    first.release()
    first.release()
    assert budget.reserved_bytes == 0
    with pytest.raises(ValueError, match="positive"):
        MemoryBudget(0)
