"""Scoring many image files through a running service: what `facedemo predict --url` runs.

The files are the paths given: a file as named, and the image files (by suffix) under a folder,
recursively, in sorted order; each path once. `concurrency` workers share one `AsyncClient` and
each POSTs one file at a time to /predict. Every outcome is handed on as soon as it arrives; the
CLI prints it, or `ResultsFile` appends it as one JSON line:

    {"file": PATH, "request_id": ..., "models": ..., "image": ..., "faces": [...], ...}
    {"file": PATH, "request_id": ..., "error": {problem details}}

An error line is written only for an answer about that image: 400, 413 and 415 (unreadable,
too large, not an allowed format) and 500 (the service failed on it). Anything else (the service
unreachable or unavailable after the client's retries, a 401, a 422) stops the run with that
error and writes nothing for the images in flight, so that a rerun does them.

`ResultsFile` writes each line with one unbuffered write call, so an interrupted run loses
only the images in flight. On a rerun it drops a partial last line, if the interruption left one,
and the paths already in the file are skipped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedemo.client.clients import AsyncClient
from facedemo.client.errors import FacedemoClientError, ProblemError
from facedemo.schemas import PredictResponse

# The formats the service decodes (imaging.ALLOWED_FORMATS), by their usual file suffixes.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
DEFAULT_CONCURRENCY = 4
# Answers about the image itself; a rerun would get the same, so they are recorded.
IMAGE_ERROR_STATUSES = frozenset({400, 413, 415, 500})


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The files to score: each path that is not a folder, and the image files under each folder.

    Folders are searched recursively and their files sorted; hidden files and folders (a leading
    dot) are left out. A path given twice, or also found in a folder, comes once.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if not path.is_dir():
            found.setdefault(path, None)
            continue
        for root, folders, names in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    found.setdefault(Path(root, name), None)
    return list(found)


@dataclass(frozen=True)
class Outcome:
    """What became of one file: the service's answer, its refusal, or why it was not sent."""

    path: Path
    response: PredictResponse | None = None
    error: ProblemError | None = None
    unreadable: str | None = None  # the file could not be read here

    @property
    def reason(self) -> str:
        """Why the file has no prediction; empty when it has one."""
        if self.unreadable is not None:
            return self.unreadable
        if self.error is not None:
            return self.error.detail or self.error.title
        return ""

    def json_line(self) -> str:
        """The file's line in a results file (module docstring); ValueError if unanswered."""
        document: dict[str, Any] = {"file": str(self.path)}
        if self.response is not None:
            document.update(self.response.model_dump(mode="json"))
        elif self.error is not None:
            document["request_id"] = self.error.request_id
            document["error"] = self.error.problem.model_dump(mode="json", exclude_none=True)
        else:
            raise ValueError(f"{self.path} was not answered: it has no results line")
        return json.dumps(document)


@dataclass
class BulkRun:
    """The tally of one run."""

    total: int
    predicted: int = 0
    failed: int = 0
    unreadable: int = 0
    seconds: float = 0.0
    stopped_by: FacedemoClientError | None = None

    @property
    def done(self) -> int:
        """Files with an outcome."""
        return self.predicted + self.failed + self.unreadable

    @property
    def images_per_second(self) -> float:
        """Answered files per second of the run."""
        return (self.predicted + self.failed) / self.seconds if self.seconds else 0.0


async def predict_files(
    client: AsyncClient,
    files: Sequence[Path],
    *,
    detect: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_outcome: Callable[[Outcome], None],
    progress: Callable[[int, int], None] | None = None,
) -> BulkRun:
    """POST each file to /predict, `concurrency` at a time; `on_outcome` hears of each at once.

    Returns the tally; `stopped_by` is the error that stopped the run early, if one did.
    """
    import anyio

    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    run = BulkRun(total=len(files))
    pending = iter(files)  # shared by the workers; next() never awaits, so no lock is needed
    started = time.monotonic()

    async def work(cancel: anyio.CancelScope) -> None:
        for path in pending:
            try:
                outcome = Outcome(path, response=await client.predict(path, detect=detect))
                run.predicted += 1
            except OSError as error:
                outcome = Outcome(path, unreadable=error.strerror or str(error))
                run.unreadable += 1
            except ProblemError as error:
                if error.status not in IMAGE_ERROR_STATUSES:
                    run.stopped_by = run.stopped_by or error
                    cancel.cancel()
                    return
                outcome = Outcome(path, error=error)
                run.failed += 1
            except FacedemoClientError as error:
                run.stopped_by = run.stopped_by or error
                cancel.cancel()
                return
            on_outcome(outcome)
            if progress is not None:
                progress(run.done, run.total)

    async with anyio.create_task_group() as workers:
        for _ in range(min(concurrency, len(files))):
            workers.start_soon(work, workers.cancel_scope)
    run.seconds = time.monotonic() - started
    return run


class ResultsFile:
    """A JSON-lines results file that a rerun resumes (module docstring)."""

    def __init__(self, path: Path) -> None:
        """Open `path` for appending, creating it; trims a partial last line first."""
        self.path = path
        self.completed = _completed_files(path)
        self._file = path.open("ab", buffering=0)

    def write(self, outcome: Outcome) -> None:
        """Append the outcome's line with one write call."""
        line = (outcome.json_line() + "\n").encode()
        written = 0
        while written < len(line):  # a raw write may take fewer bytes than offered
            written += self._file.write(line[written:]) or 0

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _completed_files(path: Path) -> set[str]:
    """The "file" of each complete line of `path`; drops an unfinished last line from the file."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as file:
            file.truncate(end)
    completed = set()
    for line in data[:end].splitlines():
        try:
            completed.add(json.loads(line)["file"])
        except (ValueError, KeyError, TypeError):
            continue  # not one of our lines: leave it, and do not count it as done
    return completed
