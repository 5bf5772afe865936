"""Write a model bundle: model.keras, manifest.json (with the model's sha256) and MODEL_CARD.md."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras

from facedemo.manifest import (
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    Manifest,
    sha256_file,
)


def inference_copy(model: keras.Model) -> keras.Model:
    """The same layers (shared, not copied) in an uncompiled model: saved without the optimizer
    state, which serving never needs and which would about double the file."""
    return keras.Model(model.input, model.output, name=model.name)


def write_bundle(
    models_dir: Path,
    model: keras.Model,
    manifest_fields: dict[str, Any],
    model_card: str,
) -> Path:
    """Save `model` as `models_dir/<name>/<version>/` and return that folder.

    `manifest_fields` holds every Manifest field except the ones computed here (`model_sha256`,
    `created`, `parameters`). The bundle is written to a temporary folder first and moved into
    place, so a crash never leaves a half-written bundle that the registry would pick up.
    """
    name, version = manifest_fields["name"], manifest_fields["version"]
    target = models_dir / name / version
    if target.exists():
        raise FileExistsError(f"bundle {target} already exists; choose another --version")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".writing-") as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        inference_copy(model).save(str(staging / MODEL_FILE))
        manifest = Manifest(
            **manifest_fields,
            model_sha256=sha256_file(staging / MODEL_FILE),
            created=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            parameters=model.count_params(),
        )
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )
        (staging / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")
        shutil.move(str(staging), str(target))
    return target
