"""`facedemo predict`: images in this process, or (with --url) through a running service."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path

from facedemo.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    complain,
    load_detector,
    load_registry,
    positive_int,
    terminal_progress,
)
from facedemo.client import AsyncClient
from facedemo.client.bulk import (
    DEFAULT_CONCURRENCY,
    BulkRun,
    Outcome,
    ResultsFile,
    image_files,
    predict_files,
)
from facedemo.config import Settings
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import FacedemoError, InputError
from facedemo.pipeline import Pipeline
from facedemo.schemas import PredictResponse

# Where `predict --url` takes an API key from, so that it need not show in the process list.
CLIENT_API_KEY_VARIABLE = "FACEDEMO_CLIENT_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="image files, or folders searched recursively for image files",
    )
    parser.add_argument(
        "--detect",
        choices=[mode.value for mode in DetectMode],
        default=DEFAULT_DETECT_MODE.value,
        help="how to find faces; auto: detect and align every face; skip: each image is one "
        "face crop (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per image and line: the API's response plus 'file'",
    )
    remote = parser.add_argument_group(
        "through a running service", "send the images to a facedemo service instead"
    )
    remote.add_argument("--url", help="the service's base URL, e.g. http://127.0.0.1:8000")
    remote.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help=f"requests in flight at once (default: {DEFAULT_CONCURRENCY})",
    )
    remote.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="append one JSON line per image (its answer, or its error) to FILE as each "
        "arrives; images already in FILE are skipped, so a rerun resumes",
    )
    remote.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"the service's API key (default: the {CLIENT_API_KEY_VARIABLE} variable)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Predict each image, in-process or (with --url) through a service."""
    if args.url is not None:
        return _predict_through_service(args, image_files(args.images))
    remote_only = [flag for flag in ("concurrency", "output", "api_key") if getattr(args, flag)]
    if remote_only:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in remote_only)
        complain(f"{flags} only work with --url")
        return EXIT_USAGE
    return _predict_in_process(args, settings, image_files(args.images))


def _predict_in_process(args: argparse.Namespace, settings: Settings, files: list[Path]) -> int:
    """Predict each image with the API's pipeline; a bad image does not stop the others."""
    try:
        registry = load_registry(settings)
    except FacedemoError as error:
        complain(f"models not loaded: {error.detail}")
        return EXIT_FAILURE
    detect = DetectMode(args.detect)
    pipeline = Pipeline(registry, settings, load_detector(settings, registry, detect))
    status = EXIT_OK
    for path in files:
        try:
            prediction = pipeline.predict_image(path.read_bytes(), detect)
        except OSError as error:
            complain(f"{path}: {error.strerror or error}")
            status = EXIT_FAILURE
            continue
        except InputError as error:
            complain(f"{path}: {error.detail}")
            status = EXIT_FAILURE
            continue
        _print_prediction(path, prediction, args.json)
    return status


def _predict_through_service(args: argparse.Namespace, files: list[Path]) -> int:
    """POST each image to the service at --url, --concurrency at a time (client/bulk.py)."""
    try:
        results = ResultsFile(args.output) if args.output is not None else None
    except OSError as error:
        complain(f"{args.output}: {error.strerror or error}")
        return EXIT_USAGE
    todo = [path for path in files if results is None or str(path) not in results.completed]
    skipped = len(files) - len(todo)

    def record(outcome: Outcome) -> None:
        if results is not None and outcome.unreadable is None:
            results.write(outcome)  # the answer or the refusal: one line either way
        elif outcome.response is not None:
            _print_prediction(outcome.path, outcome.response, args.json)
        else:
            complain(f"{outcome.path}: {outcome.reason}")

    # httpx logs every request at INFO: thousands of lines that would bury the summary.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    api_key = args.api_key or os.environ.get(CLIENT_API_KEY_VARIABLE) or None
    concurrency = args.concurrency or DEFAULT_CONCURRENCY

    async def score() -> BulkRun:
        async with AsyncClient(args.url, api_key=api_key, max_connections=concurrency) as client:
            return await predict_files(
                client,
                todo,
                detect=args.detect,
                concurrency=concurrency,
                on_outcome=record,
                progress=terminal_progress("predicting"),
            )

    try:
        run = asyncio.run(score())
    except KeyboardInterrupt:
        complain(
            "interrupted" + (f"; rerun with --output {args.output} to resume" if results else "")
        )
        return EXIT_INTERRUPTED
    finally:
        if results is not None:
            results.close()
    complain(_run_summary(run, skipped, args.output))
    if run.stopped_by is not None:
        complain(f"stopped: {run.stopped_by}")
        return EXIT_FAILURE
    return EXIT_OK if run.done == run.predicted else EXIT_FAILURE


def _run_summary(run: BulkRun, skipped: int, output: Path | None) -> str:
    already = f", {skipped} skipped (already in {output})" if skipped else ""
    unreadable = f", {run.unreadable} unreadable" if run.unreadable else ""
    return (
        f"{run.done}/{run.total} images: {run.predicted} predicted, {run.failed} failed"
        f"{unreadable}{already}; {run.images_per_second:.1f} images/s"
    )


def _print_prediction(path: Path, response: PredictResponse, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"file": str(path), **response.model_dump(mode="json")}), flush=True)
    else:
        print(_prediction_table(path, response), flush=True)


def _prediction_table(path: Path, response: PredictResponse) -> str:
    faces = response.faces
    lines = [
        f"{path}: {response.image.width}x{response.image.height}, "
        f"{len(faces)} face{'' if len(faces) == 1 else 's'}, {response.timings_ms.total:.1f} ms"
    ]
    if faces:
        level = f"{faces[0].age.interval.level:.0%}"
        lines.append(
            f"  {'#':>2}  {'box x,y,w,h':<20} {'age':>5}  {level + ' interval':<14} "
            f"{'bucket':<8} gender"
        )
    for number, face in enumerate(faces, start=1):
        box = f"{face.box.x},{face.box.y},{face.box.width},{face.box.height}"
        interval = f"{face.age.interval.low:.1f}-{face.age.interval.high:.1f}"
        lines.append(
            f"  {number:>2}  {box:<20} {face.age.years:>5.1f}  {interval:<14} "
            f"{face.age.bucket:<8} {face.gender.label} ({face.gender.confidence:.2f})"
        )
    return "\n".join(lines)
