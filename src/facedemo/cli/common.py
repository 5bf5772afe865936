"""What the subcommands share: exit statuses, argument types, messages, loading the models."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from facedemo.config import Settings
from facedemo.detect_mode import DetectMode

if TYPE_CHECKING:
    from facedemo.detection import FaceDetector
    from facedemo.registry import Registry

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROGRESS_BAR_WIDTH = 30


def load_registry(settings: Settings) -> Registry:
    """The registry over the settings' models folder, device, pins and op threads."""
    quiet_tensorflow()
    from facedemo.registry import Registry

    return Registry.from_settings(settings)


def load_detector(
    settings: Settings, registry: Registry, detect: DetectMode
) -> FaceDetector | None:
    """The face detector (FACEDEMO_DETECTOR) when `detect` needs one, else None."""
    if detect is not DetectMode.AUTO:
        return None
    from facedemo import detection

    return detection.load_detector(settings, registry.device)


def quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up INFO lines would bury a command-line tool's output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def complain(message: str) -> None:
    print(f"facedemo: {message}", file=sys.stderr, flush=True)


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (1-65535)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def terminal_progress(label: str) -> Callable[[int, int], None] | None:
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
