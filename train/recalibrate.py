"""Refit a trained bundle's calibration with the current code, without training it again.

A bundle's age head is tempered with what `facedemo.age_distribution.fit_tempering` fitted on the
calibration split after training. When that fitting changes, this brings a bundle up to date: the
same split (the manifest's seed, checked against its data checksum), the same model file (its
sha256 unchanged), a new `calibration` (which says it was refitted), new validation figures and a
new MODEL_CARD.md, as the training command would now write them.

Commands (from the repository root, with the project installed: `make install`):

    # the served bundles, refitted when the temperature learnt to grow with age:
    .venv/bin/python -m train.recalibrate models/age-gender-classifier/1.4.0 \
        models/age-regressor/1.7.0 --data ../shared/data/utkface
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from facedemo.manifest import (
    CLASSIFIER_NAME,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    REGRESSOR_NAME,
    Manifest,
)
from train import classifier, regressor
from train.common import (
    DEFAULT_DATA,
    REPO_ROOT,
    calibration_record,
    log,
    prepare,
    validation_report,
)

CARDS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], str]] = {
    CLASSIFIER_NAME: classifier.render_card,
    REGRESSOR_NAME: regressor.render_card,
}


REFITTED_ON = "calibration split, refitted after training (python -m train.recalibrate)"


class RecalibrationError(ValueError):
    """The bundle cannot be refitted: it has no age head, or the data folder is not the one it
    was trained on (so its split would differ)."""


def recalibrate(bundle: Path, data: Path, cache_dir: Path) -> dict[str, Any]:
    """Refit `bundle`'s calibration on its calibration split; rewrite its manifest and card.

    Returns the new manifest. Raises RecalibrationError, touching nothing, when the bundle has no
    age head or `data` is not the folder it was trained on.
    """
    manifest = json.loads((bundle / MANIFEST_FILE).read_text(encoding="utf-8"))
    if "age_logits" not in manifest["outputs"]:
        raise RecalibrationError(f"{bundle} has no age head to calibrate")
    config = manifest["training"]["config"]
    # threads 0: this process may have started TensorFlow already, and these are few predictions.
    args = argparse.Namespace(**config | {"data": data, "cache_dir": cache_dir, "threads": 0})
    prepared = prepare(args)
    if prepared.checksum != manifest["training"]["data"]["checksum"]:
        raise RecalibrationError(
            f"{data} is not the data {bundle} was trained on (checksum "
            f"{prepared.checksum[:16]}, trained on {manifest['training']['data']['checksum'][:16]})"
        )
    model = keras.saving.load_model(bundle / MODEL_FILE, compile=False)
    splits = prepared.splits
    report, tempering = validation_report(model, splits["calibration"], splits["validation"])
    manifest["calibration"] = calibration_record(tempering) | {"fitted_on": REFITTED_ON}
    manifest["metrics"]["validation"] = report
    manifest = Manifest.model_validate(manifest).model_dump(mode="json")
    _replace(bundle / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    _replace(bundle / MODEL_CARD_FILE, CARDS[manifest["name"]](args, manifest))
    return manifest


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so a crash leaves the old file whole."""
    staging = path.with_name(f".{path.name}.writing")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+", help="models/<name>/<version> folders")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for bundle in args.bundles:
        try:
            manifest = recalibrate(bundle, args.data, args.cache_dir)
        except RecalibrationError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        validation = manifest["metrics"]["validation"]
        log(
            f"{bundle}: calibration {manifest['calibration']}; validation MAE "
            f"{validation['age_mae']}, 80% coverage {validation['age_interval_coverage']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
