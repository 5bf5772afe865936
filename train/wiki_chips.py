"""IMDB-WIKI photos -> aligned face chips like the service's, cached, for the regressor's training.

IMDB-WIKI's `wiki_crop` images are loose detector crops with a margin, not UTKFace's tightly
aligned chips. The service feeds its models crops aligned to the UTKFace template
(`facedemo.alignment`), so WIKI photos go through the same step: detect (`facedemo.detection`),
keep the largest face, align it to the template, resize. Photos where no face is found are
dropped and counted. Chips are cached like UTKFace arrays, keyed by the data and the size.

    .venv/bin/python -m train.regressor --wiki ../wiki_crop/wiki.mat --version 1.8.0

adds the WIKI chips to the training split only: calibration and validation stay UTKFace, so the
figures compare with bundles trained without WIKI.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedemo.errors import InputError
from train.utkface import ArraySet, LabelledImage, dataset_checksum, read_rgb
from train.wiki import load_wiki

# An aligned chip at the training size, or None when the photo shows no usable face.
ChipMaker = Callable[[np.ndarray], np.ndarray | None]


@dataclass(frozen=True)
class ChipReport:
    photos: int
    undecodable: int
    no_face: int
    kept: int


def detector_chips(size: int) -> ChipMaker:
    """The service's detection and alignment as the bundled models were trained with (MTCNN):
    the largest face, aligned, at size x size.

    The detector loads on the first photo, so a warm chip cache never loads it.
    """
    from facedemo.alignment import align_face
    from facedemo.mtcnn_detector import MtcnnDetector

    detectors: list[MtcnnDetector] = []

    def chip(image: np.ndarray) -> np.ndarray | None:
        if not detectors:
            detectors.append(MtcnnDetector.load())
        detections = detectors[0].detect(image)
        if not detections:
            return None
        largest = max(detections, key=lambda detection: detection.area)
        return align_face(image, largest.landmarks, detectors[0].template, (size, size))

    return chip


def load_chips(
    images: list[LabelledImage], size: int, cache_dir: Path | None, make_chip: ChipMaker
) -> tuple[ArraySet, ChipReport]:
    """Decode each photo, make its chip, and return the kept ones with their labels (cached)."""
    key = hashlib.sha256(f"{dataset_checksum(images)}|{size}|aligned-v1".encode()).hexdigest()[:16]
    cache_file = None if cache_dir is None else cache_dir / f"wiki-{size}-{key}.npz"
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file) as cached:
            pixels, kept_rows = cached["images"], cached["rows"]
            report = ChipReport(**json.loads(str(cached["report"])))
    else:
        chips, rows, undecodable, no_face = [], [], 0, 0
        for row, item in enumerate(images):
            try:
                image = read_rgb(item.path)
            except (InputError, OSError):
                undecodable += 1
                continue
            chip = make_chip(image)
            if chip is None:
                no_face += 1
                continue
            chips.append(chip)
            rows.append(row)
        pixels = np.array(chips, dtype=np.uint8).reshape(-1, size, size, 3)
        kept_rows = np.array(rows, dtype=np.int64)
        report = ChipReport(len(images), undecodable, no_face, len(rows))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache_file, images=pixels, rows=kept_rows, report=json.dumps(report.__dict__))
    kept = [images[row] for row in kept_rows]
    arrays = ArraySet(
        images=pixels,
        ages=np.array([item.label.age for item in kept], dtype=np.int32),
        genders=np.array([item.label.gender for item in kept], dtype=np.int32),
        races=np.full(len(kept), -1, dtype=np.int32),
        names=[str(item.path) for item in kept],
    )
    return arrays, report


def wiki_training_rows(
    mat_path: Path, size: int, cache_dir: Path | None, make_chip: ChipMaker | None = None
) -> tuple[ArraySet, dict[str, object]]:
    """Chips and labels of every usable WIKI / IMDB photo, and a record for the manifest."""
    images, metadata = load_wiki(mat_path)
    arrays, chips = load_chips(
        images, size, cache_dir, make_chip if make_chip is not None else detector_chips(size)
    )
    record = {
        "name": f"IMDB-WIKI ({mat_path.name}), aligned with the service's detector",
        "metadata_rows": metadata.rows,
        "passed_filters": metadata.kept,
        "undecodable": chips.undecodable,
        "no_face": chips.no_face,
        "used": chips.kept,
        "checksum": dataset_checksum(images),
    }
    return arrays, record
