"""The dynamic batcher: face crops from concurrent requests -> one registry call per batch.

In the style of TF Serving's and Triton's dynamic batching. A caller hands over one request's
crops, uint8 (n, height, width, 3), and gets its rows of the batch's `FacePredictions` back:
`submit(crops)` returns a `concurrent.futures.Future` (async code awaits it with
`asyncio.wrap_future`), `predict(crops)` blocks the calling thread until the rows are there, so a
`BatchingPredictor` stands in for the registry wherever `.predict` is called (the pipeline).

One worker thread forms the batches:

- It starts a batch once the waiting faces reach `max_batch_size`, or once the oldest request has
  waited `batch_timeout_ms`, and runs the registry ONCE for the whole batch. The registry pads the
  batch to one of its fixed sizes (Registry.PADDED_BATCH_SIZES, all warmed at load), which is why
  `max_batch_size` may not exceed the largest of them.
- A batch takes whole requests in arrival order while their faces fit; a request is never split.
  A request with more faces than `max_batch_size` runs as a batch of its own (the registry cuts it
  into chunks of its largest padded size), so no request waits on two batches.
- `max_batch_size=1` turns batching off: every request runs alone, through the same queue and
  worker, one registry call per request (the baseline).

Backpressure, counted in faces because faces are what cost memory and model time:

- A request arriving while `max_queue` or more faces wait is refused at once with
  OverloadedError (503, `Retry-After`: the estimated seconds to work off the queue). The queue
  therefore never holds more than max_queue - 1 faces plus one request's.
- A request not taken into a batch within `request_timeout_ms` of its arrival is dropped from the
  queue and fails with DeadlineExceededError (503). Once its batch runs, it is answered.
- `stop()` refuses new requests (NotReadyError) and runs what is queued before the worker ends;
  requests still queued when the worker cannot finish in time fail with NotReadyError.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facedemo.errors import DeadlineExceededError, NotReadyError, OverloadedError

if TYPE_CHECKING:
    # Types only: the registry (and TensorFlow) come after the batcher in the flow of the house.
    from facedemo.config import Settings
    from facedemo.head_combination import FacePredictions

WORKER_NAME = "facedemo-batcher"


class Predictor(Protocol):
    """What the batcher runs its batches on: the registry, or a stand-in in tests."""

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the crops `predict` takes."""
        ...

    def predict(self, crops: np.ndarray) -> FacePredictions:
        """Predictions for uint8 crops (n, height, width, 3), one row per crop."""
        ...


class BatchObserver(Protocol):
    """Receives the batcher's events, e.g. to export them as metrics."""

    def queue_depth_changed(self, faces: int) -> None:
        """`faces` crops are now waiting for a batch."""

    def batch_ran(self, faces: int, compute_seconds: float, waits: Sequence[float]) -> None:
        """A batch of `faces` crops took `compute_seconds`; `waits` is each request's queue wait."""

    def request_refused(self, code: str) -> None:
        """A request failed without running: its error's code (overloaded, deadline_exceeded)."""


class _SilentObserver:
    def queue_depth_changed(self, faces: int) -> None:
        pass

    def batch_ran(self, faces: int, compute_seconds: float, waits: Sequence[float]) -> None:
        pass

    def request_refused(self, code: str) -> None:
        pass


@dataclass(eq=False)  # identity, not field, equality: requests are removed from the queue by it
class _Request:
    crops: np.ndarray
    future: Future[FacePredictions]
    enqueued: float  # time.monotonic()
    deadline: float


class BatchingPredictor:
    """Collects crops from concurrent callers into batches run by one worker thread."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_size: int = 32,
        batch_timeout_ms: float = 5.0,
        max_queue: int = 128,
        request_timeout_ms: float = 10_000.0,
        observer: BatchObserver | None = None,
    ) -> None:
        """Batch calls to `predictor.predict`; call `start()` before the first request."""
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError(
                f"max_batch_size and max_queue must be at least 1, got {max_batch_size}, "
                f"{max_queue}"
            )
        if batch_timeout_ms < 0 or request_timeout_ms <= 0:
            raise ValueError(
                f"batch_timeout_ms must be >= 0 and request_timeout_ms > 0, got "
                f"{batch_timeout_ms}, {request_timeout_ms}"
            )
        self._predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._batch_timeout = batch_timeout_ms / 1000.0
        self._request_timeout = request_timeout_ms / 1000.0
        self._observer: BatchObserver = observer or _SilentObserver()
        self._queue: deque[_Request] = deque()
        self._queued_faces = 0
        self._condition = threading.Condition()  # guards the queue, its count and the state
        self._state = "new"  # -> running -> stopping -> stopped
        self._worker: threading.Thread | None = None
        self._batch_seconds = 0.0  # moving average of a batch's compute time, for Retry-After

    @classmethod
    def from_settings(
        cls, predictor: Predictor, settings: Settings, observer: BatchObserver | None = None
    ) -> BatchingPredictor:
        """A batcher set up as FACEDEMO_MAX_BATCH_SIZE, _BATCH_TIMEOUT_MS, _MAX_QUEUE, ... say."""
        return cls(
            predictor,
            max_batch_size=settings.max_batch_size,
            batch_timeout_ms=settings.batch_timeout_ms,
            max_queue=settings.max_queue,
            request_timeout_ms=settings.request_timeout_ms,
            observer=observer,
        )

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the crops the wrapped predictor takes."""
        return self._predictor.input_size

    @property
    def queued_faces(self) -> int:
        """How many crops are waiting for a batch now."""
        with self._condition:
            return self._queued_faces

    def start(self) -> None:
        """Start the worker thread; requests are accepted from now on."""
        with self._condition:
            if self._state != "new":
                raise RuntimeError(f"a batcher starts once; this one is {self._state}")
            self._state = "running"
            self._worker = threading.Thread(target=self._work, name=WORKER_NAME, daemon=True)
            self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new requests, run the queued ones, and end the worker.

        If the worker has not finished within `timeout` seconds, the requests still queued fail
        with NotReadyError (a batch already running is left to finish).
        """
        with self._condition:
            if self._state == "new":
                self._state = "stopped"
                return
            if self._state == "running":
                self._state = "stopping"
                self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        with self._condition:
            self._state = "stopped"
            while self._queue:
                request = self._queue.popleft()
                self._queued_faces -= len(request.crops)
                self._fail(request, NotReadyError("the service stopped before this request ran"))
            self._observer.queue_depth_changed(self._queued_faces)

    def submit(self, crops: np.ndarray) -> Future[FacePredictions]:
        """Queue one request's crops; the future gets its rows, in order, once its batch has run.

        Raises OverloadedError when `max_queue` faces are already waiting, NotReadyError when the
        batcher is not running, ValueError for crops the predictor cannot take. The future fails
        with DeadlineExceededError if no batch took the request within the request timeout.
        Cancelling the future while the request waits removes it from the queue.
        """
        self._check(crops)
        future: Future[FacePredictions] = Future()
        if len(crops) == 0 and self._state == "running":
            # Nothing for the models to do: the registry's empty answer, at once.
            future.set_result(self._predictor.predict(crops))
            return future
        with self._condition:
            if self._state != "running":
                raise NotReadyError(f"the batcher is {self._state}, not accepting requests")
            if self._queued_faces >= self.max_queue:
                self._observer.request_refused(OverloadedError.code)
                raise OverloadedError(
                    f"{self._queued_faces} faces are waiting for the models, the limit is "
                    f"{self.max_queue}; retry later",
                    retry_after=self._retry_after(),
                )
            now = time.monotonic()
            request = _Request(crops, future, enqueued=now, deadline=now + self._request_timeout)
            self._queue.append(request)
            self._queued_faces += len(crops)
            future.add_done_callback(partial(self._forget_if_cancelled, request))
            self._observer.queue_depth_changed(self._queued_faces)
            self._condition.notify_all()
        return future

    def predict(self, crops: np.ndarray) -> FacePredictions:
        """Submit `crops` and wait for their rows: the registry's `predict`, batched.

        Raises what `submit` raises, and DeadlineExceededError when the request was not taken
        into a batch within the request timeout (it is then dropped from the queue).
        """
        future = self.submit(crops)
        try:
            return future.result(timeout=self._request_timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # still queued: drop it
                self._observer.request_refused(DeadlineExceededError.code)
                raise DeadlineExceededError(
                    self._deadline_detail(), retry_after=self._retry_after()
                ) from None
            return future.result()  # its batch is running: the answer is moments away

    # ------------------------------------------------------------------------- worker side

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a full batch or the oldest request's timeout; None once stopped and empty."""
        with self._condition:
            while True:
                now = time.monotonic()
                self._drop_expired(now)
                if not self._queue:
                    if self._state != "running":
                        return None
                    self._condition.wait()
                    continue
                flush_at = self._queue[0].enqueued + self._batch_timeout
                full = self._queued_faces >= self.max_batch_size
                if full or now >= flush_at or self._state != "running":
                    batch = self._take_batch()
                    if batch:
                        return batch
                    continue  # every request taken had been cancelled
                self._condition.wait(flush_at - now)

    def _take_batch(self) -> list[_Request]:
        """Whole requests from the front of the queue while they fit in max_batch_size."""
        batch: list[_Request] = []
        faces = 0
        while self._queue:
            count = len(self._queue[0].crops)
            if batch and faces + count > self.max_batch_size:
                break
            request = self._queue.popleft()
            self._queued_faces -= count
            # From here on the caller can no longer cancel it; a cancelled one is dropped.
            if request.future.set_running_or_notify_cancel():
                batch.append(request)
                faces += count
        self._observer.queue_depth_changed(self._queued_faces)
        return batch

    def _drop_expired(self, now: float) -> None:
        expired = [request for request in self._queue if request.deadline <= now]
        for request in expired:
            self._queue.remove(request)
            self._queued_faces -= len(request.crops)
            if self._fail(request, DeadlineExceededError(self._deadline_detail())):
                self._observer.request_refused(DeadlineExceededError.code)
        if expired:
            self._observer.queue_depth_changed(self._queued_faces)

    def _run(self, batch: list[_Request]) -> None:
        """One registry call for the whole batch; each request gets its rows (or the error)."""
        started = time.monotonic()
        crops = batch[0].crops if len(batch) == 1 else np.concatenate([r.crops for r in batch])
        try:
            predictions = self._predictor.predict(crops)
        except Exception as error:  # a model failure fails this batch's requests, not the worker
            for request in batch:
                request.future.set_exception(error)
            return
        compute_seconds = time.monotonic() - started
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * compute_seconds
        self._observer.batch_ran(
            len(crops), compute_seconds, [started - request.enqueued for request in batch]
        )
        start = 0
        for request in batch:
            stop = start + len(request.crops)
            request.future.set_result(
                predictions if len(batch) == 1 else _rows(predictions, start, stop)
            )
            start = stop

    # ------------------------------------------------------------------------- helpers

    def _check(self, crops: np.ndarray) -> None:
        height, width = self.input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8:
            raise ValueError(f"crops must be a uint8 numpy array, got {type(crops).__name__}")
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"crops must have shape (n, {height}, {width}, 3), got {crops.shape}")

    def _forget_if_cancelled(self, request: _Request, future: Future[FacePredictions]) -> None:
        if not future.cancelled():
            return
        with self._condition:
            try:
                self._queue.remove(request)
            except ValueError:  # the worker had already taken (and dropped) it
                return
            self._queued_faces -= len(request.crops)
            self._observer.queue_depth_changed(self._queued_faces)

    @staticmethod
    def _fail(request: _Request, error: Exception) -> bool:
        """Fail a request taken off the queue; False if its caller had cancelled it already."""
        if not request.future.set_running_or_notify_cancel():
            return False
        request.future.set_exception(error)
        return True

    def _retry_after(self) -> int:
        """Whole seconds the queued faces should take to run, at least 1."""
        batches = math.ceil(self._queued_faces / self.max_batch_size)
        return max(1, math.ceil(batches * self._batch_seconds))

    def _deadline_detail(self) -> str:
        return (
            f"the request waited more than {self._request_timeout * 1000:.0f} ms for the models; "
            "retry later"
        )


def _rows(predictions: FacePredictions, start: int, stop: int) -> FacePredictions:
    """Rows start:stop of every per-face array of `predictions` (the other fields as they are)."""
    sliced: dict[str, Any] = {
        field.name: value[start:stop]
        for field in fields(predictions)
        if isinstance(value := getattr(predictions, field.name), np.ndarray)
    }
    return replace(predictions, **sliced)
