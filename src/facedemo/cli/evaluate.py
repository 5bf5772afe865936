"""`facedemo evaluate`: the served pipeline's figures on a labelled image folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facedemo.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    complain,
    load_detector,
    load_registry,
    positive_int,
    terminal_progress,
)
from facedemo.config import Settings
from facedemo.detect_mode import DetectMode
from facedemo.errors import FacedemoError, InputError
from facedemo.evaluation import evaluate, format_report, load_labelled_set
from facedemo.pipeline import Pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--limit", type=positive_int, metavar="N", help="evaluate only the first N images"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Measure the served pipeline on a labelled set; exit 1 when no face could be measured."""
    try:
        labelled = load_labelled_set(args.data, args.labels)
    except InputError as error:
        complain(error.detail)
        return EXIT_USAGE
    try:
        registry = load_registry(settings)
    except FacedemoError as error:
        complain(f"models not loaded: {error.detail}")
        return EXIT_FAILURE
    detect = DetectMode(args.detect)
    report = evaluate(
        Pipeline(registry, settings, load_detector(settings, registry, detect)),
        labelled,
        detect,
        limit=args.limit,
        progress=terminal_progress("evaluating"),
    )
    print(json.dumps(report) if args.json else format_report(report), flush=True)
    return EXIT_OK if report["n"] else EXIT_FAILURE
