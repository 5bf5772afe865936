"""The `facedemo` command: serve the API, predict images in-process, list model bundles.

    facedemo serve [--host H] [--port P] [--workers N]
    facedemo predict PATH... [--detect auto|skip] [--json]
    facedemo predict --url URL PATH... [--concurrency N] [--output FILE.jsonl] [--api-key KEY]
    facedemo evaluate DATA [--labels CSV] [--detect skip] [--json] [--limit N]
    facedemo models [--json]

A PATH is an image file or a folder, searched recursively for image files. With --url the images
go to a running service (facedemo.client.bulk), without it they are predicted in this process.
Settings come from FACEDEMO_* environment variables (see config.py); flags override them. Each
subcommand is one entry of SUBCOMMANDS: a help line, a function adding its arguments, and a
function running it that returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGINT, SIGTERM
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from facedemo import __version__
from facedemo.bundles import (
    REQUIRED_MODELS,
    available_versions,
    check_contract,
    find_bundle,
    read_manifest,
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
from facedemo.config import Settings, get_settings
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.errors import BundleError, FacedemoError, InputError
from facedemo.evaluation import evaluate, format_report, load_labelled_set
from facedemo.logging_config import build_log_config
from facedemo.pipeline import Pipeline
from facedemo.schemas import PredictResponse

if TYPE_CHECKING:
    from fastapi import FastAPI

    from facedemo.detection import Detector
    from facedemo.registry import Registry

APP_FACTORY = "facedemo.cli:create_served_app"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# uvicorn's own status for an application that cannot start (uvicorn.config.STARTUP_FAILURE): its
# multi-worker supervisor stops, rather than restarting a worker that exits with it.
EXIT_CANNOT_SERVE = 3
# Where `predict --url` takes an API key from, so that it need not show in the process list.
CLIENT_API_KEY_VARIABLE = "FACEDEMO_CLIENT_API_KEY"
PROGRESS_BAR_WIDTH = 30


@dataclass(frozen=True)
class Subcommand:
    """One `facedemo <name>` command."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


# ----------------------------------------------------------------------------- serve


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default: FACEDEMO_HOST, 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, help="port to listen on (default: FACEDEMO_PORT, 8000)"
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="server processes, each loading its own models (default: 1)",
    )


def _run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run uvicorn over the app factory; each worker process builds its app from the env.

    On SIGTERM or Ctrl-C uvicorn stops accepting connections, lets in-flight requests finish
    (for up to FACEDEMO_SHUTDOWN_TIMEOUT_SECONDS), runs the lifespan shutdown, and the command
    exits 0. When the models cannot be loaded the process exits with status 3 right after
    logging why (`create_served_app`); with `--workers N`, uvicorn's supervisor stops every
    worker when one exits so, but itself exits 0 (uvicorn 0.55).
    """
    import uvicorn

    # uvicorn re-raises the stop signal after its graceful shutdown so that the signal's default
    # action ends the process (status -15); a completed graceful shutdown is a clean exit. Before
    # uvicorn takes the signals over, the same handler just exits: nothing is in flight yet.
    previous = {stop: signal.signal(stop, _exit_cleanly) for stop in (SIGTERM, SIGINT)}
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=args.host or settings.host,
            port=args.port or settings.port,
            workers=args.workers,
            log_level=settings.log_level,
            # uvicorn applies it in every worker process too; our access line replaces uvicorn's.
            log_config=build_log_config(settings),
            access_log=False,
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        )
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    return EXIT_OK


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_OK)


def create_served_app() -> FastAPI:
    """The app `facedemo serve` runs in each worker: one that ends its process if models fail.

    A process that can never become ready must not stay up: `docker run` shows the reason at once
    and Kubernetes reports CrashLoopBackOff with it, instead of a pod alive but never ready.
    """
    from facedemo.api import create_app

    return create_app(on_load_failure=_exit_cannot_serve)


def _exit_cannot_serve(reason: str) -> None:
    # At once rather than through uvicorn's graceful stop: no request can be using the models,
    # and a stop by signal would end a worker with the signal's status, which uvicorn's
    # supervisor answers with a restart that fails the same way.
    logging.getLogger(__name__).critical(
        "exiting with status %d: the models cannot be loaded with this configuration",
        EXIT_CANNOT_SERVE,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CANNOT_SERVE)


# ----------------------------------------------------------------------------- predict


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
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
        type=_positive_int,
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


def _run_predict(args: argparse.Namespace, settings: Settings) -> int:
    """Predict each image, in-process or (with --url) through a service."""
    if args.url is not None:
        return _predict_through_service(args, image_files(args.images))
    remote_only = [flag for flag in ("concurrency", "output", "api_key") if getattr(args, flag)]
    if remote_only:
        flags = ", ".join("--" + flag.replace("_", "-") for flag in remote_only)
        _complain(f"{flags} only work with --url")
        return EXIT_USAGE
    return _predict_in_process(args, settings, image_files(args.images))


def _predict_in_process(args: argparse.Namespace, settings: Settings, files: list[Path]) -> int:
    """Predict each image with the API's pipeline; a bad image does not stop the others."""
    try:
        registry = _load_registry(settings)
    except FacedemoError as error:
        _complain(f"models not loaded: {error.detail}")
        return EXIT_FAILURE
    detect = DetectMode(args.detect)
    pipeline = Pipeline(registry, settings, _load_detector(settings, registry, detect))
    status = EXIT_OK
    for path in files:
        try:
            prediction = pipeline.predict_image(path.read_bytes(), detect)
        except OSError as error:
            _complain(f"{path}: {error.strerror or error}")
            status = EXIT_FAILURE
            continue
        except InputError as error:
            _complain(f"{path}: {error.detail}")
            status = EXIT_FAILURE
            continue
        _print_prediction(path, PredictResponse.from_prediction(prediction), args.json)
    return status


def _predict_through_service(args: argparse.Namespace, files: list[Path]) -> int:
    """POST each image to the service at --url, --concurrency at a time (client/bulk.py)."""
    try:
        results = ResultsFile(args.output) if args.output is not None else None
    except OSError as error:
        _complain(f"{args.output}: {error.strerror or error}")
        return EXIT_USAGE
    todo = [path for path in files if results is None or str(path) not in results.completed]
    skipped = len(files) - len(todo)

    def record(outcome: Outcome) -> None:
        if results is not None and outcome.unreadable is None:
            results.write(outcome)  # the answer or the refusal: one line either way
        elif outcome.response is not None:
            _print_prediction(outcome.path, outcome.response, args.json)
        else:
            _complain(f"{outcome.path}: {outcome.reason}")

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
                progress=_terminal_progress("predicting"),
            )

    try:
        run = asyncio.run(score())
    except KeyboardInterrupt:
        _complain(
            "interrupted" + (f"; rerun with --output {args.output} to resume" if results else "")
        )
        return EXIT_INTERRUPTED
    finally:
        if results is not None:
            results.close()
    _complain(_run_summary(run, skipped, args.output))
    if run.stopped_by is not None:
        _complain(f"stopped: {run.stopped_by}")
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


# ----------------------------------------------------------------------------- evaluate


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data",
        type=Path,
        metavar="DATA",
        help="folder of UTKFace-named images (AGE_GENDER_RACE_DATE.jpg) or of --labels' images",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="CSV",
        help="CSV with a 'path' column (relative to DATA) and any of age, gender (male/female), "
        "race (white/black/asian/indian/others)",
    )
    # Labelled sets are usually face chips like the training data, which a detector would re-crop.
    parser.add_argument(
        "--detect",
        choices=[mode.value for mode in DetectMode],
        default=DetectMode.SKIP.value,
        help="how to find faces; skip: each image is one face chip; otherwise the largest face "
        "found is measured (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--limit", type=_positive_int, metavar="N", help="evaluate only the first N images"
    )


def _run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Measure the served pipeline on a labelled set; exit 1 when no face could be measured."""
    try:
        labelled = load_labelled_set(args.data, args.labels)
    except InputError as error:
        _complain(error.detail)
        return EXIT_USAGE
    try:
        registry = _load_registry(settings)
    except FacedemoError as error:
        _complain(f"models not loaded: {error.detail}")
        return EXIT_FAILURE
    detect = DetectMode(args.detect)
    report = evaluate(
        Pipeline(registry, settings, _load_detector(settings, registry, detect)),
        labelled,
        detect,
        limit=args.limit,
        progress=_terminal_progress("evaluating"),
    )
    print(json.dumps(report) if args.json else format_report(report), flush=True)
    return EXIT_OK if report["n"] else EXIT_FAILURE


def _terminal_progress(label: str) -> Callable[[int, int], None] | None:
    """A progress bar on stderr, redrawn in place; None when stderr is not a terminal."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def show(done: int, total: int) -> None:
        filled = PROGRESS_BAR_WIDTH * done // max(total, 1)
        bar = "#" * filled + "-" * (PROGRESS_BAR_WIDTH - filled)
        rate = done / max(time.monotonic() - started, 1e-9)
        end = "\n" if done >= total else ""
        line = f"\r{label} [{bar}] {done}/{total} images, {rate:.1f}/s"
        print(line, end=end, file=sys.stderr, flush=True)

    return show


# ----------------------------------------------------------------------------- models


def _add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def _run_models(args: argparse.Namespace, settings: Settings) -> int:
    """List every bundle under the models folder, checked as the service would check it.

    Exits 1 when the service could not load from this folder (a model missing or broken).
    """
    try:
        rows, problems = _bundle_rows(settings)
    except OSError as error:  # e.g. a folder this user may not read
        rows, problems = [], [f"cannot read the model bundles in {settings.models_dir}: {error}"]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(_bundle_table(rows))
    for problem in problems:
        _complain(problem)
    return EXIT_FAILURE if problems else EXIT_OK


def _bundle_rows(settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per bundle found, and why the service would not load from this folder, if so."""

    models_dir = settings.models_dir
    if not models_dir.is_dir():
        return [], [f"models directory {models_dir} does not exist"]
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    names = sorted(
        entry.name
        for entry in models_dir.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )
    for name in sorted(set(names) | set(REQUIRED_MODELS)):
        try:
            selected: Path | None = find_bundle(models_dir, name, settings.model_pins.get(name))
        except BundleError as error:
            selected = None
            if name in REQUIRED_MODELS:
                problems.append(error.detail)
        for version in available_versions(models_dir, name):
            bundle = models_dir / name / version
            row: dict[str, Any] = {
                "name": name,
                "version": version,
                "selected": bundle == selected,
                "task": None,
                "created": None,
                "model_sha256": None,
                "ok": True,
                "problem": None,
            }
            try:
                manifest = read_manifest(bundle)
                row.update(task=manifest.task, created=manifest.created)
                row["model_sha256"] = manifest.model_sha256
                check_contract(manifest)
            except BundleError as error:
                row.update(ok=False, problem=error.detail)
                if row["selected"] and name in REQUIRED_MODELS:
                    problems.append(error.detail)
            rows.append(row)
    return rows, problems


def _bundle_table(rows: list[dict[str, Any]]) -> str:
    header = f"  {'name':<24} {'version':<9} {'task':<27} {'created':<26} {'sha256':<13} check"
    lines = [header]
    for row in rows:
        marker = "*" if row["selected"] else " "
        sha = (row["model_sha256"] or "-")[:12]
        check = "ok" if row["ok"] else f"FAILED: {row['problem']}"
        lines.append(
            f"{marker} {row['name']:<24} {row['version']:<9} {row['task'] or '-':<27} "
            f"{row['created'] or '-':<26} {sha:<13} {check}"
        )
    lines.append("* = the version the service loads (newest, unless pinned by FACEDEMO_MODEL_PINS)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command


SUBCOMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand("run the HTTP service", _add_serve_arguments, _run_serve),
    "predict": Subcommand(
        "predict age and gender for image files, in-process or through a running service",
        _add_predict_arguments,
        _run_predict,
    ),
    "models": Subcommand(
        "list the model bundles in the models folder and check them",
        _add_models_arguments,
        _run_models,
    ),
    "evaluate": Subcommand(
        "measure the models on a labelled image folder (UTKFace names, or a CSV of labels)",
        _add_evaluate_arguments,
        _run_evaluate,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand in SUBCOMMANDS."""
    parser = argparse.ArgumentParser(
        prog="facedemo",
        description="Age and gender estimation from face photos. Settings: FACEDEMO_* variables.",
    )
    parser.add_argument("--version", action="version", version=f"facedemo {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, subcommand in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=subcommand.help, description=subcommand.help)
        subcommand.add_arguments(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `facedemo` with `argv` (default: the process arguments); return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as error:
        _complain(f"invalid FACEDEMO_* settings:\n{error}")
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level.upper(), format="facedemo: %(levelname)s: %(message)s"
    )
    return SUBCOMMANDS[args.command].run(args, settings)


def _load_registry(settings: Settings) -> Registry:
    _quiet_tensorflow()
    from facedemo.registry import Registry

    return Registry.load(settings.models_dir, device=settings.device, pins=settings.model_pins)


def _load_detector(settings: Settings, registry: Registry, detect: DetectMode) -> Detector | None:
    """The face detector on the registry's device when `detect` needs one, else None."""
    if detect is not DetectMode.AUTO:
        return None
    from facedemo.detection import Detector

    return Detector.from_settings(settings, registry.device)


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up INFO lines would bury a command-line tool's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _complain(message: str) -> None:
    print(f"facedemo: {message}", file=sys.stderr, flush=True)


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
