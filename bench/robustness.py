"""How the served models hold up when faces are framed or photographed unlike UTKFace's chips.

    .venv/bin/python -m train.split_csv --data /path/to/UTKFace --out /tmp/splits
    .venv/bin/python -m bench.robustness /path/to/UTKFace /tmp/splits/calibration.csv

Each labelled chip (--count rows spread evenly over the CSV) is changed in memory (zoomed
out inside a border of its own edge pixels, zoomed in to its centre, greyscale, low resolution,
strong JPEG, darker), encoded as PNG and sent through the served pipeline, as an upload would
be, with detect=skip (the image is the face) and detect=auto (detect and align) with each
FACEDEMO_DETECTOR. Nothing is written to disk. A face the detector misses is left out of that
row's figures (its `faces`).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from bench.readme import write_section
from PIL import Image, ImageEnhance

from facedemo.imaging import decode_image, resize_rgb
from facedemo.manifest import GENDER_LABELS

if TYPE_CHECKING:
    from facedemo.evaluation import LabelledFile

SECTION = "## Robustness to framing and image quality"
COMMAND = "python -m bench.robustness /path/to/UTKFace /tmp/splits/calibration.csv --write-readme"

Change = Callable[[np.ndarray], np.ndarray]


def zoomed_out(chip: np.ndarray) -> np.ndarray:
    """The chip shrunk to 70% of the side, framed by its own edge pixels."""
    border = round(0.15 / 0.7 * chip.shape[0])
    framed = np.pad(chip, ((border, border), (border, border), (0, 0)), mode="edge")
    return resize_rgb(framed, chip.shape[:2])


def zoomed_in(chip: np.ndarray) -> np.ndarray:
    """The central 80% of the chip, at the chip's size."""
    height, width = chip.shape[:2]
    top, left = round(0.1 * height), round(0.1 * width)
    return resize_rgb(
        np.ascontiguousarray(chip[top : height - top, left : width - left]), (height, width)
    )


def greyscale(chip: np.ndarray) -> np.ndarray:
    grey = np.asarray(Image.fromarray(chip).convert("L"))
    return np.repeat(grey[..., None], 3, axis=2)


def low_resolution(chip: np.ndarray) -> np.ndarray:
    """Down to 32x32 and back up."""
    return resize_rgb(resize_rgb(chip, (32, 32)), chip.shape[:2])


def strong_jpeg(chip: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="JPEG", quality=15)
    return np.asarray(Image.open(buffer).convert("RGB"))


def darker(chip: np.ndarray) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(chip)).enhance(0.5))


CHANGES: dict[str, Change] = {
    "as they are": lambda chip: chip,
    "zoomed out (face at 70%)": zoomed_out,
    "zoomed in (central 80%)": zoomed_in,
    "greyscale": greyscale,
    "32x32 pixels": low_resolution,
    "JPEG quality 15": strong_jpeg,
    "half as bright": darker,
}


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def labelled_chips(
    files: list[LabelledFile], count: int, max_pixels: int
) -> list[tuple[np.ndarray, str, float]]:
    """(chip, gender label, age) of `count` of `files`, spread evenly over them."""
    spread = np.linspace(0, len(files) - 1, min(count, len(files))).astype(int)
    chosen = [files[index] for index in spread]
    return [
        (
            decode_image(file.path.read_bytes(), max_pixels=max_pixels),
            GENDER_LABELS[file.gender],
            file.age,
        )
        for file in chosen
        if file.gender is not None and file.age is not None
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the UTKFace folder")
    parser.add_argument("labels", type=Path, help="a label CSV from train.split_csv")
    parser.add_argument("--count", type=int, default=600, help="chips to use (default 600)")
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from facedemo.config import Settings
    from facedemo.detect_mode import DetectMode
    from facedemo.detection import load_detector
    from facedemo.detector_names import DETECTOR_NAMES
    from facedemo.evaluation import load_labelled_set
    from facedemo.pipeline import Pipeline
    from facedemo.registry import Registry

    settings = Settings()
    registry = Registry.load(settings.models_dir, device="cpu")
    # detect=skip with the first pipeline; detect=auto with each detector's.
    pipelines = {}
    for name in DETECTOR_NAMES:
        detector = load_detector(Settings(detector=name), registry.device)  # type: ignore[arg-type]
        pipelines[name] = Pipeline(registry, settings, detector)
    runs = [(DetectMode.SKIP, "skip", pipelines[DETECTOR_NAMES[0]])] + [
        (DetectMode.AUTO, f"auto ({name})", pipeline) for name, pipeline in pipelines.items()
    ]
    files = load_labelled_set(args.folder, args.labels).files
    chips = labelled_chips(files, args.count, settings.max_image_pixels)
    lines = [
        "| chips | detect | faces | gender accuracy | age MAE (years) "
        "| gender, faces all detectors find | MAE, faces all detectors find |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, change in CHANGES.items():
        uploads = [png(np.ascontiguousarray(change(chip))) for chip, _, _ in chips]
        # Per run: chip index -> (gender right, absolute age error), for the chips with a face.
        outcomes: list[dict[int, tuple[bool, float]]] = []
        for mode, _, pipeline in runs:
            found = {}
            predictions = pipeline.predict_images(uploads, mode)
            for index, (prediction, (_, gender, age)) in enumerate(
                zip(predictions, chips, strict=True)
            ):
                if isinstance(prediction, Exception) or not prediction.faces:
                    continue
                face = prediction.faces[0]
                found[index] = (face.gender.label == gender, abs(face.age.years - age))
            outcomes.append(found)
        everywhere = set.intersection(*(set(found) for found in outcomes[1:]))
        for (mode, label, _), found in zip(runs, outcomes, strict=True):
            right = [found[index][0] for index in found]
            errors = [found[index][1] for index in found]
            paired = ""
            if mode is DetectMode.AUTO:
                common = sorted(everywhere)
                paired = (
                    f" {np.mean([found[index][0] for index in common]):.3f} "
                    f"| {np.mean([found[index][1] for index in common]):.2f}"
                )
            line = (
                f"| {name} | {label} | {len(right)}/{len(chips)} "
                f"| {np.mean(right):.3f} | {np.mean(errors):.2f} |{paired or ' - | -'} |"
            )
            lines.append(line)
            print(line, file=sys.stderr, flush=True)
    models = ", ".join(
        f"{model.name} {model.version}" for model in runs[0][2].models_for(DetectMode.SKIP)
    )
    text = (
        f"Command: `{COMMAND}`\n\nModels: {models}; detectors: "
        + ", ".join(f"{name} (FACEDEMO_DETECTOR={name})" for name in DETECTOR_NAMES)
        + f"; {len(chips)} chips spread evenly over the calibration split.\n\n"
        + "\n".join(lines)
    )
    print(text)
    if args.write_readme:
        write_section(
            SECTION,
            "The served pipeline on changed copies of labelled UTKFace chips (bench/robustness.py; "
            "its docstring says how the chips are changed).",
            text,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
