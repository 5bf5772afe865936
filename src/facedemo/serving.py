"""The async side of serving: worker threads, lanes by cost, the memory budget, deadlines and
readiness. `pipeline.py` is the synchronous image -> faces path; this module decides when and
where its steps run, and refuses work it cannot finish in time.

    upload bytes -> price (the header only)           in a cheap-lane thread
                 -> cheap: decode and detect            in the same thread (a batch's images
                                                        one after another, in one call)
                    heavy: decode and detect            in a heavy-lane thread, when one is free
                 -> the models (the batcher)            awaited on the event loop, holding no thread

- **Lanes**: an image whose decoding is priced above FACEDEMO_HEAVY_DECODE_BYTES (a 40 MP PNG
  takes about a second of a core) decodes in the heavy lane, half the cores' threads; everything
  else in the cheap lane, a few threads a core. Expensive images can therefore hold at most half
  the CPU, and cheap requests never queue behind them: admission by cost, not by count. Each lane
  has a bounded queue; beyond it, 503 `overloaded`.
- **Memory**: decoding reserves its priced bytes from the `MemoryBudget` (which the API's
  admission middleware also charges for request bodies) and gives them back when the thread is
  done; what does not fit is refused with 503 `overloaded` instead of growing the process.
- **Deadline**: FACEDEMO_REQUEST_TIMEOUT_MS bounds the whole work of a request, from the end of
  its upload: waiting for a thread, decoding, detection, the models. Past it the request ends as
  `deadline_exceeded`; a thread already decoding cannot be interrupted, so it finishes its step,
  keeps its reservation until then, and runs no further step (`Pipeline.locate`'s stop).
- **Cancellation**: a caller that cancels (its client went away) gets the same treatment: work
  not started never starts, work running stops at its next step.
- **Memory back**: once no request is in flight after a heavy image, the allocator's free memory
  is given back to the system (allocator.py), so that RSS falls after a burst.
- **Readiness**: `saturation()` says why the service cannot currently answer cheap requests
  within their deadline (its oldest waiting cheap request has waited half of it, or one missed
  its deadline moments ago), so that /readyz can send traffic elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import anyio

from facedemo.allocator import release_free_memory
from facedemo.config import Settings
from facedemo.cpu_cores import usable_cores
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import DeadlineExceededError, FacedemoError, InputError, OverloadedError
from facedemo.pipeline import LocatedImage, Pipeline
from facedemo.schemas import PredictResponse

if TYPE_CHECKING:
    from facedemo.batching import BatchingPredictor
    from facedemo.head_combination import FacePredictions

CHEAP_THREADS_PER_CORE = 4  # decoding and detection threads of cheap images, per CPU core
HEAVY_WAITING_PER_THREAD = 4  # heavy images that may wait for each heavy thread
# How long after a cheap request missed its deadline /readyz still reports the saturation.
SATURATION_MEMORY_SECONDS = 5.0

Result = TypeVar("Result")


class MemoryBudget:
    """Bytes that work in flight may hold at once; thread-safe, never blocks.

    `reserve` either grants the bytes at once or raises OverloadedError: a request that cannot
    have its memory now is better refused (the client retries elsewhere or later) than queued
    holding its upload.
    """

    def __init__(self, limit_bytes: int) -> None:
        """A budget of `limit_bytes`."""
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._reserved = 0

    @property
    def reserved_bytes(self) -> int:
        """Bytes reserved now."""
        return self._reserved

    def reserve(self, nbytes: int, purpose: str) -> Reservation:
        """A reservation of `nbytes` for `purpose` (said in the refusal), or OverloadedError."""
        reservation = Reservation(self, purpose)
        reservation.grow(nbytes)
        return reservation

    def _take(self, nbytes: int, purpose: str) -> None:
        with self._lock:
            if self._reserved + nbytes > self.limit_bytes:
                in_use = self._reserved
            else:
                self._reserved += nbytes
                return
        raise OverloadedError(
            f"{purpose} needs {nbytes} bytes of memory; {in_use} of the "
            f"{self.limit_bytes}-byte budget are in use; retry later"
        )

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._reserved -= nbytes


class Reservation:
    """Bytes held from a MemoryBudget until `release()` (or the end of a `with` block)."""

    def __init__(self, budget: MemoryBudget, purpose: str) -> None:
        self._budget = budget
        self._purpose = purpose
        self.nbytes = 0

    def grow(self, nbytes: int) -> None:
        """Hold `nbytes` more, or raise OverloadedError (holding what was held before)."""
        if nbytes > 0:
            self._budget._take(nbytes, self._purpose)
            self.nbytes += nbytes

    def release(self) -> None:
        """Give every byte back; releasing twice gives nothing more back."""
        nbytes, self.nbytes = self.nbytes, 0
        if nbytes:
            self._budget._give_back(nbytes)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Lane:
    """Threads for one kind of work, with a bounded first-come queue of calls waiting for them.

    Unlike AnyIO's `to_thread` with a limiter, a call whose awaiting caller is cancelled keeps
    its thread counted until the thread is really free, so the pool never runs more than
    `threads` calls however many callers gave up.
    """

    def __init__(self, name: str, threads: int, max_waiting: int) -> None:
        """`threads` threads named facedemo-`name`; at most `max_waiting` calls queued."""
        self.name = name
        self.threads = threads
        self.max_waiting = max_waiting
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"facedemo-{name}"
        )
        self._lock = threading.Lock()
        self._waiting: dict[object, float] = {}  # queued calls -> time.monotonic() they came

    def oldest_wait_seconds(self) -> float:
        """How long the call queued longest has waited; 0 when none waits."""
        with self._lock:
            since = next(iter(self._waiting.values()), None)
        return 0.0 if since is None else time.monotonic() - since

    async def run(self, function: Callable[..., Result], *args: object) -> Result:
        """`function(*args)` in one of the lane's threads; OverloadedError if the queue is full.

        Cancelling the caller drops a call that has not started; one running finishes.
        """
        ticket = object()
        with self._lock:
            waiting = len(self._waiting)
            if waiting >= self.max_waiting:
                ticket = None
            else:
                self._waiting[ticket] = time.monotonic()
        if ticket is None:
            raise OverloadedError(
                f"{waiting} images wait for a {self.name} thread, the limit is "
                f"{self.max_waiting}; retry later"
            )
        future = self._executor.submit(self._started, ticket, function, *args)
        future.add_done_callback(lambda _: self._forget(ticket))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Drop queued calls and let running ones finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _started(self, ticket: object, function: Callable[..., Result], *args: object) -> Result:
        self._forget(ticket)
        return function(*args)

    def _forget(self, ticket: object) -> None:
        with self._lock:
            self._waiting.pop(ticket, None)


@dataclass
class _Work:
    """One request's work: the flag that tells its threads to stop, and whether it went heavy."""

    stop: threading.Event
    heavy: bool = False


class Serving:
    """Runs a pipeline for async callers under the lanes, budget and deadline described above."""

    def __init__(
        self,
        pipeline: Pipeline,
        settings: Settings,
        budget: MemoryBudget,
        batcher: BatchingPredictor | None = None,
        cores: int | None = None,
    ) -> None:
        """Serve `pipeline` with `settings`' limits, charging decodes to `budget`.

        The models run through `batcher` when there is one, else in a cheap-lane thread.
        `cores` (default: the cores this process may use, `cpu_cores.usable_cores`) sizes the
        lanes.
        """
        cores = cores or usable_cores()
        self._pipeline = pipeline
        self._settings = settings
        self._budget = budget
        self._batcher = batcher
        self._cheap = Lane("decode", CHEAP_THREADS_PER_CORE * cores, settings.max_queue)
        heavy_threads = max(1, cores // 2)
        self._heavy = Lane("heavy-decode", heavy_threads, HEAVY_WAITING_PER_THREAD * heavy_threads)
        self._last_missed_deadline = -float("inf")
        self._in_flight = 0
        self._trim_due = False  # a heavy image was decoded since memory was last given back

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline this serves."""
        return self._pipeline

    async def predict_image(
        self,
        data: bytes,
        detect: DetectMode = DEFAULT_DETECT_MODE,
        age_thresholds: Sequence[int] | None = None,
    ) -> PredictResponse:
        """`Pipeline.predict_image` under the bounds in the module docstring.

        Raises the imaging errors, OverloadedError (a full lane, the memory budget, the models'
        queue) and DeadlineExceededError.
        """
        [answer] = await self._within_deadline([data], detect, age_thresholds, batch=False)
        if isinstance(answer, FacedemoError):
            raise answer
        return answer

    async def predict_images(
        self,
        images: Sequence[bytes],
        detect: DetectMode = DEFAULT_DETECT_MODE,
        age_thresholds: Sequence[int] | None = None,
    ) -> list[PredictResponse | FacedemoError]:
        """`Pipeline.predict_images` under the same bounds: the images are located one after
        another (a batch holds one thread at a time), their faces go to the models together, and
        an image's input error takes its place in the answer. The deadline covers the batch."""
        return await self._within_deadline(images, detect, age_thresholds, batch=True)

    def saturation(self) -> str | None:
        """Why cheap requests cannot be answered within their deadline now; None when they can."""
        timeout = self._settings.request_timeout_ms / 1000
        waited = self._cheap.oldest_wait_seconds()
        if waited > timeout / 2:
            return (
                f"the oldest image waiting for a decoding thread has waited {waited * 1000:.0f} "
                f"ms, over half the {self._settings.request_timeout_ms:.0f} ms deadline"
            )
        if time.monotonic() - self._last_missed_deadline < SATURATION_MEMORY_SECONDS:
            return "a request missed its deadline in the last few seconds"
        return None

    def shutdown(self) -> None:
        """Drop queued work; running threads finish in the background."""
        self._cheap.shutdown()
        self._heavy.shutdown()

    async def _within_deadline(
        self,
        images: Sequence[bytes],
        detect: DetectMode,
        age_thresholds: Sequence[int] | None,
        *,
        batch: bool,
    ) -> list[PredictResponse | FacedemoError]:
        timeout = self._settings.request_timeout_ms / 1000
        work = _Work(stop=threading.Event())
        self._in_flight += 1
        try:
            with anyio.fail_after(timeout):
                return await self._predict(work, images, detect, age_thresholds, batch)
        except TimeoutError:
            if not work.heavy:
                self._last_missed_deadline = time.monotonic()
            raise DeadlineExceededError(
                f"the request's work took more than {self._settings.request_timeout_ms:.0f} ms; "
                "retry later"
            ) from None
        except DeadlineExceededError:  # the models' queue kept it past its deadline
            if not work.heavy:
                self._last_missed_deadline = time.monotonic()
            raise
        finally:
            work.stop.set()  # threads still running this work skip their next step
            self._in_flight -= 1
            if self._in_flight == 0 and self._trim_due:
                self._trim_due = False
                asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    async def _predict(
        self,
        work: _Work,
        images: Sequence[bytes],
        detect: DetectMode,
        age_thresholds: Sequence[int] | None,
        batch: bool,
    ) -> list[PredictResponse | FacedemoError]:
        outcomes: list[LocatedImage | FacedemoError] = []
        while len(outcomes) < len(images):
            # One cheap-lane call locates images until a heavy one, which goes to the heavy lane:
            # a batch of cheap images costs one thread hand-off, not one an image.
            cheap, heavy_price = await self._cheap.run(
                self._locate_while_cheap, work, images[len(outcomes) :], detect, batch
            )
            outcomes.extend(cheap)
            if heavy_price is not None:
                work.heavy = self._trim_due = True
                data = images[len(outcomes)]
                try:
                    outcomes.append(
                        await self._heavy.run(self._locate_priced, work, data, detect, heavy_price)
                    )
                except InputError as error:
                    if not batch:
                        raise
                    outcomes.append(error)
        located = [outcome for outcome in outcomes if isinstance(outcome, LocatedImage)]
        started = time.perf_counter()
        predictions = await self._run_models(located)
        inference_seconds = time.perf_counter() - started
        answers = iter(
            self._pipeline.results(located, predictions, inference_seconds, age_thresholds)
        )
        return [
            outcome if isinstance(outcome, FacedemoError) else next(answers) for outcome in outcomes
        ]

    def _locate_while_cheap(
        self, work: _Work, images: Sequence[bytes], detect: DetectMode, batch: bool
    ) -> tuple[list[LocatedImage | FacedemoError], int | None]:
        """Locate `images` in order while they are cheap; the outcomes, and the price in bytes
        of the first heavy image (not located: it is for the heavy lane), or None."""
        outcomes: list[LocatedImage | FacedemoError] = []
        for data in images:
            try:
                decode_bytes = self._pipeline.price(data, detect).decode_bytes
                if decode_bytes > self._settings.heavy_decode_bytes:
                    return outcomes, decode_bytes
                outcomes.append(self._locate_priced(work, data, detect, decode_bytes))
            except InputError as error:
                if not batch:
                    raise
                outcomes.append(error)  # a batch answers a bad image in its place
        return outcomes, None

    def _locate_priced(
        self, work: _Work, data: bytes, detect: DetectMode, decode_bytes: int
    ) -> LocatedImage:
        with self._budget.reserve(decode_bytes, "decoding this image"):
            return self._pipeline.locate(data, detect, stop=work.stop)

    async def _run_models(self, images: Sequence[LocatedImage]) -> FacePredictions:
        crops = self._pipeline.crops(images)
        if self._batcher is not None:
            return await asyncio.wrap_future(self._batcher.submit(crops))
        return await self._cheap.run(self._pipeline.predict_crops, crops)
