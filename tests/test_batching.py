"""The dynamic batcher: batches from concurrent callers, rows back to the right caller, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem

from facedemo.api import create_app
from facedemo.api.problems import install_problem_handlers, status_of
from facedemo.batching import BatchingPredictor
from facedemo.config import Settings
from facedemo.errors import DeadlineExceededError, FacedemoError, NotReadyError, OverloadedError
from facedemo.head_combination import FacePredictions
from facedemo.registry import MAX_BATCH_SIZE, Registry

SIZE = (4, 4)
WAIT = 10.0  # seconds: the most any test waits for an event that should come at once
HTTP_WAIT = 60.0  # the same through the app: a request decodes, and the test machine may be busy


def crops(*ids: int) -> np.ndarray:
    """One crop per id, every pixel equal to it, so a row's answer tells whose crop it was."""
    return np.stack([np.full((*SIZE, 3), face_id, np.uint8) for face_id in ids])


class FakeRegistry:
    """Answers age_years = the crop's id; records each call's size; can hold calls at a gate."""

    input_size = SIZE

    def __init__(self, delay: float = 0.0, gated: bool = False, fail_on: int | None = None):
        self.delay = delay
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.entered = threading.Event()  # set when a call has started
        self.fail_on = fail_on
        self.calls: list[list[int]] = []
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> FacePredictions:
        ids = batch[:, 0, 0, 0].astype(np.float32)
        if len(batch):
            self.entered.set()
            assert self.gate.wait(WAIT)
            time.sleep(self.delay)
            with self._lock:
                self.calls.append([int(face_id) for face_id in ids])
        if self.fail_on is not None and self.fail_on in ids:
            raise RuntimeError(f"the model failed on crop {self.fail_on}")
        return FacePredictions(
            bucket_probabilities=np.tile(ids[:, None], (1, 5)),
            gender_probabilities=np.tile(ids[:, None], (1, 2)),
            age_years=ids,
            age_interval=np.stack([ids - 1, ids + 1], axis=1),
            interval_level=0.8,
            age_distribution=np.tile(ids[:, None], (1, 3)),  # rows told apart by their id
        )


class RecordingObserver:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.batches: list[tuple[int, float, list[float]]] = []
        self.refused: list[str] = []

    def queue_depth_changed(self, faces: int) -> None:
        self.depths.append(faces)

    def batch_ran(self, faces: int, compute_seconds: float, waits: Sequence[float]) -> None:
        self.batches.append((faces, compute_seconds, list(waits)))

    def request_refused(self, code: str) -> None:
        self.refused.append(code)


Started = list[tuple[BatchingPredictor, Any]]


@pytest.fixture
def started() -> Iterator[Started]:
    """Batchers a test starts; stopped afterwards (gates opened first) so no thread outlives it."""
    batchers: Started = []
    yield batchers
    for batcher, registry in batchers:
        if isinstance(registry, FakeRegistry):
            registry.gate.set()
        batcher.stop(timeout=WAIT)


def make(started: Started, registry: FakeRegistry | Registry, **options: Any) -> BatchingPredictor:
    batcher = BatchingPredictor(registry, **options)
    batcher.start()
    started.append((batcher, registry))
    return batcher


def years(future: Future[FacePredictions]) -> list[float]:
    return future.result(timeout=WAIT).age_years.tolist()


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows(
    started: Started,
) -> None:
    registry = FakeRegistry(delay=0.05)
    observer = RecordingObserver()
    batcher = make(started, registry, batch_timeout_ms=20, observer=observer)
    barrier = threading.Barrier(16)
    answers: dict[int, FacePredictions] = {}

    def call(face_id: int) -> None:
        barrier.wait(WAIT)
        answers[face_id] = batcher.predict(crops(face_id))

    threads = [threading.Thread(target=call, args=(face_id,)) for face_id in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)

    assert sorted(answers) == list(range(1, 17))
    for face_id, answer in answers.items():
        assert answer.age_years.tolist() == [face_id]
        assert answer.bucket_probabilities.tolist() == [[face_id] * 5]
        assert answer.age_interval.tolist() == [[face_id - 1, face_id + 1]]
        assert answer.interval_level == 0.8
    assert len(registry.calls) < 16  # batched: fewer model calls than requests
    assert sorted(i for call in registry.calls for i in call) == list(range(1, 17))
    assert [faces for faces, _, _ in observer.batches] == [len(c) for c in registry.calls]
    assert sum(len(waits) for _, _, waits in observer.batches) == 16
    assert observer.depths[-1] == 0


def test_a_lone_request_runs_once_the_batch_timeout_has_passed(
    started: Started,
) -> None:
    registry = FakeRegistry()
    batcher = make(started, registry, batch_timeout_ms=100)
    begun = time.monotonic()
    answer = batcher.predict(crops(7))
    waited = time.monotonic() - begun
    assert answer.age_years.tolist() == [7]
    assert registry.calls == [[7]]
    assert 0.09 <= waited < WAIT


def test_a_full_batch_runs_without_waiting_for_the_timeout(
    started: Started,
) -> None:
    registry = FakeRegistry()
    batcher = make(started, registry, max_batch_size=4, batch_timeout_ms=60_000)
    begun = time.monotonic()
    assert years(batcher.submit(crops(1, 2, 3, 4))) == [1, 2, 3, 4]
    assert time.monotonic() - begun < 30
    assert registry.calls == [[1, 2, 3, 4]]


def test_max_batch_size_one_turns_batching_off_one_call_per_request(
    started: Started,
) -> None:
    registry = FakeRegistry(gated=True)
    batcher = make(started, registry, max_batch_size=1, batch_timeout_ms=1000)
    first = batcher.submit(crops(1))
    assert registry.entered.wait(WAIT)  # a batch of one does not wait for the timeout
    rest = [batcher.submit(crops(face_id, face_id + 100)) for face_id in (2, 3, 4)]
    registry.gate.set()
    assert years(first) == [1]
    assert [years(future) for future in rest] == [[2, 102], [3, 103], [4, 104]]
    assert registry.calls == [[1], [2, 102], [3, 103], [4, 104]]


def test_requests_are_never_split_and_an_oversized_one_runs_alone(
    started: Started,
) -> None:
    registry = FakeRegistry(gated=True)
    batcher = make(started, registry, max_batch_size=4, batch_timeout_ms=0)
    held = batcher.submit(crops(1, 2, 3))
    assert registry.entered.wait(WAIT)
    futures = [
        batcher.submit(crops(*ids)) for ids in ((4, 5), (6, 7), (8, 9, 10, 11, 12, 13), (14,))
    ]
    registry.gate.set()
    assert years(held) == [1, 2, 3]
    assert [years(future) for future in futures] == [
        [4, 5],
        [6, 7],
        [8, 9, 10, 11, 12, 13],
        [14],
    ]
    assert registry.calls == [[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]


def test_a_full_queue_refuses_requests_with_overloaded(started: Started) -> None:
    registry = FakeRegistry(gated=True)
    observer = RecordingObserver()
    batcher = make(started, registry, max_queue=3, batch_timeout_ms=0, observer=observer)
    running = batcher.submit(crops(1))
    assert registry.entered.wait(WAIT)
    queued = [batcher.submit(crops(2, 3)), batcher.submit(crops(4))]  # 3 faces wait
    assert batcher.queued_faces == 3
    with pytest.raises(OverloadedError) as refusal:
        batcher.submit(crops(5))
    assert refusal.value.code == "overloaded"
    assert status_of(refusal.value) == 503
    assert refusal.value.retry_after is not None and refusal.value.retry_after >= 1
    assert observer.refused == ["overloaded"]
    registry.gate.set()
    assert years(running) == [1]
    assert [years(future) for future in queued] == [[2, 3], [4]]
    assert 5 not in [face_id for call in registry.calls for face_id in call]
    assert years(batcher.submit(crops(6))) == [6]  # room again once the queue has run


def test_a_request_past_its_deadline_fails_and_leaves_the_queue(
    started: Started,
) -> None:
    registry = FakeRegistry(gated=True)
    observer = RecordingObserver()
    batcher = make(started, registry, batch_timeout_ms=0, request_timeout_ms=200, observer=observer)
    running = batcher.submit(crops(1))
    assert registry.entered.wait(WAIT)
    waiting = batcher.submit(crops(2))  # an async-style caller: only the worker can expire it
    begun = time.monotonic()
    with pytest.raises(DeadlineExceededError) as expired:
        batcher.predict(crops(3))  # a blocking caller gives up at its deadline
    assert time.monotonic() - begun >= 0.19
    assert expired.value.code == "deadline_exceeded" and status_of(expired.value) == 503
    assert batcher.queued_faces == 1  # crop 3 has left the queue; crop 2 waits for the worker
    registry.gate.set()
    assert years(running) == [1]
    with pytest.raises(DeadlineExceededError):
        waiting.result(timeout=WAIT)
    assert registry.calls == [[1]]  # neither late request reached the model
    assert batcher.queued_faces == 0
    assert sorted(observer.refused) == ["deadline_exceeded", "deadline_exceeded"]


def test_a_running_request_is_answered_even_past_its_deadline(
    started: Started,
) -> None:
    registry = FakeRegistry(delay=0.3)
    batcher = make(started, registry, batch_timeout_ms=0, request_timeout_ms=100)
    assert batcher.predict(crops(9)).age_years.tolist() == [9]


def test_cancelling_a_waiting_request_removes_it_from_the_queue(
    started: Started,
) -> None:
    registry = FakeRegistry(gated=True)
    batcher = make(started, registry, batch_timeout_ms=0)
    running = batcher.submit(crops(1))
    assert registry.entered.wait(WAIT)
    cancelled = batcher.submit(crops(2, 3))
    assert batcher.queued_faces == 2
    assert cancelled.cancel()
    assert batcher.queued_faces == 0
    registry.gate.set()
    assert years(running) == [1]
    assert years(batcher.submit(crops(4))) == [4]
    assert registry.calls == [[1], [4]]


def test_stop_runs_the_queued_requests_then_refuses_new_ones() -> None:
    registry = FakeRegistry(gated=True)
    batcher = BatchingPredictor(registry, batch_timeout_ms=60_000)
    batcher.start()
    futures = [batcher.submit(crops(face_id)) for face_id in (1, 2, 3)]
    stopper = threading.Thread(target=batcher.stop)
    stopper.start()
    registry.gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert [years(future) for future in futures] == [[1], [2], [3]]
    assert registry.calls == [[1, 2, 3]]  # stopping flushes at once, without the timeout
    with pytest.raises(NotReadyError):
        batcher.submit(crops(4))


def test_stop_fails_what_it_cannot_run_in_time_clearly() -> None:
    registry = FakeRegistry(gated=True)
    batcher = BatchingPredictor(registry, batch_timeout_ms=0)
    batcher.start()
    running = batcher.submit(crops(1))
    assert registry.entered.wait(WAIT)
    queued = batcher.submit(crops(2))
    batcher.stop(timeout=0.1)
    with pytest.raises(NotReadyError, match="stopped before this request ran"):
        queued.result(timeout=WAIT)
    registry.gate.set()
    assert years(running) == [1]  # the batch that was running finishes
    batcher.stop(timeout=WAIT)


def test_a_batcher_takes_requests_only_between_start_and_stop() -> None:
    batcher = BatchingPredictor(FakeRegistry())
    with pytest.raises(NotReadyError):
        batcher.submit(crops(1))
    batcher.stop()
    with pytest.raises(RuntimeError, match="starts once"):
        batcher.start()


def test_a_model_failure_fails_its_batch_but_not_the_worker(
    started: Started,
) -> None:
    registry = FakeRegistry(fail_on=13)
    batcher = make(started, registry, batch_timeout_ms=0)
    with pytest.raises(RuntimeError, match="failed on crop 13"):
        batcher.predict(crops(13))
    assert batcher.predict(crops(14)).age_years.tolist() == [14]


def test_no_crops_are_answered_at_once_without_a_model_call(
    started: Started,
) -> None:
    registry = FakeRegistry()
    batcher = make(started, registry, batch_timeout_ms=60_000)
    answer = batcher.predict(np.zeros((0, *SIZE, 3), np.uint8))
    assert answer.age_years.shape == (0,)
    assert registry.calls == []


def test_crops_the_models_cannot_take_are_refused_before_queueing(
    started: Started,
) -> None:
    batcher = make(started, FakeRegistry())
    with pytest.raises(ValueError, match="shape"):
        batcher.submit(np.zeros((1, 5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        batcher.submit(np.zeros((1, *SIZE, 3), np.float32))
    assert batcher.queued_faces == 0


def test_async_callers_await_the_futures(started: Started) -> None:
    registry = FakeRegistry()
    batcher = make(started, registry, batch_timeout_ms=200)

    async def main() -> list[list[float]]:
        answers = await asyncio.gather(
            *(asyncio.wrap_future(batcher.submit(crops(face_id))) for face_id in (1, 2, 3))
        )
        return [answer.age_years.tolist() for answer in answers]

    assert asyncio.run(main()) == [[1], [2], [3]]
    assert registry.calls == [[1, 2, 3]]


def test_batched_answers_equal_the_registry_s_own(
    tiny_registry: Registry, started: Started
) -> None:
    batcher = make(started, tiny_registry, batch_timeout_ms=50)
    rng = np.random.default_rng(5)
    requests = [
        rng.integers(0, 256, (count, *tiny_registry.input_size, 3), dtype=np.uint8)
        for count in (1, 3, 2, 1, 5)
    ]
    futures = [batcher.submit(request) for request in requests]
    for request, future in zip(requests, futures, strict=True):
        batched, alone = future.result(timeout=WAIT), tiny_registry.predict(request)
        np.testing.assert_allclose(
            batched.bucket_probabilities, alone.bucket_probabilities, atol=1e-5
        )
        np.testing.assert_allclose(
            batched.gender_probabilities, alone.gender_probabilities, atol=1e-5
        )
        np.testing.assert_allclose(batched.age_years, alone.age_years, atol=1e-3)
        np.testing.assert_allclose(batched.age_interval, alone.age_interval, atol=1e-3)


def test_settings_configure_the_batcher_within_the_registry_s_padded_sizes() -> None:
    settings = Settings(max_batch_size=8, batch_timeout_ms=2, max_queue=64, request_timeout_ms=500)
    batcher = BatchingPredictor.from_settings(FakeRegistry(), settings)
    assert (batcher.max_batch_size, batcher.max_queue) == (8, 64)
    assert Settings().max_batch_size == MAX_BATCH_SIZE
    with pytest.raises(ValidationError):
        Settings(max_batch_size=MAX_BATCH_SIZE + 1)  # no batch shape the registry has not warmed
    with pytest.raises(ValidationError):
        Settings(max_queue=0)


# ----------------------------------------------------------------------------- over HTTP


async def eventually(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(HTTP_WAIT):
        while not condition():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_a_full_queue_is_a_503_problem_with_retry_after(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = threading.Event(), threading.Event()
    predict = Registry.predict

    def held_predict(self: Registry, batch: np.ndarray) -> FacePredictions:
        entered.set()
        assert gate.wait(HTTP_WAIT)
        return predict(self, batch)

    monkeypatch.setattr(Registry, "predict", held_predict)
    settings = Settings(
        models_dir=tiny_models_dir, max_batch_size=1, batch_timeout_ms=0, max_queue=1
    )
    app = create_app(settings)
    upload = {"file": ("face.png", image_bytes("PNG"), "image/png")}
    answers: dict[str, httpx.Response] = {}
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200

        async def send(name: str) -> None:
            answers[name] = await client.post("/predict", params={"detect": "skip"}, files=upload)

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, "running")
                await eventually(entered.is_set)
                tasks.start_soon(send, "queued")
                await eventually(lambda: app.state.service.batcher.queued_faces == 1)
                answers["refused"] = await client.post(
                    "/predict", params={"detect": "skip"}, files=upload
                )
                gate.set()
        finally:
            gate.set()
        metrics = (await client.get("/metrics")).text

    body = assert_problem(answers["refused"], 503, "overloaded")
    assert "limit is 1" in body["detail"]
    assert int(answers["refused"].headers["Retry-After"]) >= 1
    assert answers["running"].status_code == 200
    assert answers["queued"].status_code == 200
    assert 'facedemo_batch_refused_total{reason="overloaded"} 1.0' in metrics
    assert 'route="/predict",status="503"} 1.0' in metrics


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "code", "retry_after"),
    [
        (OverloadedError("full", retry_after=3), "overloaded", "3"),
        (DeadlineExceededError("late", retry_after=2), "deadline_exceeded", "2"),
        (NotReadyError("loading"), "not_ready", None),
    ],
)
async def test_the_problem_handler_sends_retry_after_when_the_error_has_one(
    error: FacedemoError, code: str, retry_after: str | None
) -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/busy")
    async def busy() -> None:
        raise error

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facedemo") as client:
        response = await client.get("/busy")
    assert_problem(response, 503, code)
    assert response.headers.get("Retry-After") == retry_after
