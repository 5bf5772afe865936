"""Measure an alignment template: where a detector puts the five landmarks in UTKFace chips.

    .venv/bin/python -m bench.alignment_template /path/to/UTKFace --count 400 [--detector mtcnn]

Reads `count` chips spread evenly over the sorted folder (the files stay where they are), runs
the detector (FACEDEMO_DETECTOR's choices; default: the service's default) with its default
settings on each, and prints the mean position of each landmark of the largest face as fractions
of the chip's width and height, with the spread, ready to paste into that detector's `TEMPLATE`
(`facedemo.retinaface_detector` or `facedemo.mtcnn_detector`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS
from facedemo.detector_names import DEFAULT_DETECTOR, DETECTOR_NAMES
from facedemo.imaging import decode_image

LANDMARK_NAMES = ("left eye", "right eye", "nose", "mouth left", "mouth right")


def chip_paths(folder: Path, count: int) -> list[Path]:
    """`count` files spread evenly over the sorted chips of `folder`."""
    paths = sorted(path for path in folder.iterdir() if path.suffix.lower() == ".jpg")
    if not paths:
        raise SystemExit(f"no .jpg files in {folder}")
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def measure(paths: list[Path], detector_name: str) -> tuple[np.ndarray, int]:
    """Landmarks (n, 5, 2) of the largest face per chip, as fractions of the chip side."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from facedemo.config import Settings
    from facedemo.detection import load_detector

    detector = load_detector(Settings(detector=detector_name), "CPU:0")
    found = []
    for path in paths:
        image = decode_image(path.read_bytes(), max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
        faces = detector.detect(image)
        if faces:
            height, width = image.shape[:2]
            found.append(faces[0].landmarks / [width, height])
    return np.array(found), len(paths)


def main(argv: list[str] | None = None) -> int:
    """Print the template measured over the chips in the folder given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of UTKFace aligned & cropped chips")
    parser.add_argument("--count", type=int, default=400, help="chips to measure")
    parser.add_argument("--detector", choices=DETECTOR_NAMES, default=DEFAULT_DETECTOR)
    args = parser.parse_args(argv)
    paths = chip_paths(args.folder, args.count)
    landmarks, tried = measure(paths, args.detector)
    if not len(landmarks):
        print("no face found in any chip", file=sys.stderr)
        return 1
    mean, spread = landmarks.mean(axis=0), landmarks.std(axis=0)
    step = max(1, len(sorted(args.folder.glob("*.jpg"))) // args.count)
    print(f"faces found in {len(landmarks)} of {tried} chips (one file in {step})")
    for name, (x, y), (sx, sy) in zip(LANDMARK_NAMES, mean, spread, strict=True):
        print(f"{name:12s} x {x:.4f} (sd {sx:.4f})  y {y:.4f} (sd {sy:.4f})")
    print("TEMPLATE rows:")
    for x, y in mean:
        print(f"        [{x:.4f}, {y:.4f}],")
    return 0


if __name__ == "__main__":
    sys.exit(main())
