"""The `facedemo` command: serve the API, predict images in-process, list model bundles.

    facedemo serve [--host H] [--port P] [--workers N]
    facedemo predict PATH... [--detect auto|skip] [--json]
    facedemo predict --url URL PATH... [--concurrency N] [--output FILE.jsonl] [--api-key KEY]
    facedemo evaluate DATA [--labels CSV] [--detect skip] [--json] [--limit N]
    facedemo models [--json]

A PATH is an image file or a folder, searched recursively for image files. With --url the images
go to a running service (facedemo.client.bulk), without it they are predicted in this process.
Settings come from FACEDEMO_* environment variables (see config.py); flags override them. Each
subcommand is a module of this package and one entry of SUBCOMMANDS: a help line, its module's
`add_arguments`, and its `run`, which returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_settings import SettingsError

from facedemo import __version__
from facedemo.cli import evaluate, models, predict, serve
from facedemo.cli.common import EXIT_USAGE, complain
from facedemo.config import Settings, describe_invalid_settings, get_settings

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]


@dataclass(frozen=True)
class Subcommand:
    """One `facedemo <name>` command."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]


SUBCOMMANDS: dict[str, Subcommand] = {
    "serve": Subcommand("run the HTTP service", serve.add_arguments, serve.run),
    "predict": Subcommand(
        "predict age and gender for image files, in-process or through a running service",
        predict.add_arguments,
        predict.run,
    ),
    "models": Subcommand(
        "list the model bundles in the models folder and check them",
        models.add_arguments,
        models.run,
    ),
    "evaluate": Subcommand(
        "measure the models on a labelled image folder (UTKFace names, or a CSV of labels)",
        evaluate.add_arguments,
        evaluate.run,
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
        for problem in describe_invalid_settings(error):
            complain(f"invalid setting {problem}")
        return EXIT_USAGE
    except SettingsError as error:  # a value pydantic-settings itself could not parse
        cause = f": {error.__cause__}" if error.__cause__ else ""
        complain(f"invalid FACEDEMO_* setting: {error}{cause}")
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level.upper(), format="facedemo: %(levelname)s: %(message)s"
    )
    return SUBCOMMANDS[args.command].run(args, settings)
