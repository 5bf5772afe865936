"""`facedemo models`: the bundles in the models folder, checked as the service checks them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facedemo.bundles import (
    REQUIRED_MODELS,
    available_versions,
    check_contract,
    find_bundle,
    read_manifest,
)
from facedemo.cli.common import EXIT_FAILURE, EXIT_OK, complain
from facedemo.config import Settings
from facedemo.errors import BundleError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list")


def run(args: argparse.Namespace, settings: Settings) -> int:
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
        complain(problem)
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
