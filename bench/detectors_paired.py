"""Does the detector change the estimates? detect=auto with each FACEDEMO_DETECTOR, chip by chip.

    .venv/bin/python -m train.split_csv --data /path/to/UTKFace --out /tmp/splits
    .venv/bin/python -m bench.detectors_paired /path/to/UTKFace /tmp/splits/validation.csv

Every labelled image goes through the served pipeline (`Pipeline.locate`, then
`predict_located`) once per detector; the largest face found is the estimate. On the images
where every detector finds a face, it prints each detector's gender accuracy, age-bucket
accuracy and age MAE, and each detector's difference from the first with a 95% bootstrap
interval (2,000 resamples of the images), so that a detector's own alignment can be judged
apart from which faces it finds.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

GROUP = 64
RESAMPLES = 2000
MEASURES = ("gender accuracy", "bucket accuracy", "age MAE")


def outcomes(folder: Path, labels: Path, detector_name: str) -> dict[str, tuple[float, ...]]:
    """Per image name: (gender right, bucket right, absolute age error) with one detector."""
    from facedemo.config import Settings
    from facedemo.detect_mode import DetectMode
    from facedemo.detection import load_detector
    from facedemo.evaluation import load_labelled_set
    from facedemo.manifest import AGE_BUCKET_LABELS, GENDER_LABELS, age_bucket
    from facedemo.pipeline import Pipeline
    from facedemo.registry import Registry

    settings = Settings(detector=detector_name)  # type: ignore[arg-type]
    registry = Registry.from_settings(settings)
    pipeline = Pipeline(registry, settings, load_detector(settings, registry.device))
    files = [
        file
        for file in load_labelled_set(folder, labels).files
        if file.age is not None and file.gender is not None
    ]
    found: dict[str, tuple[float, ...]] = {}
    for start in range(0, len(files), GROUP):
        group = files[start : start + GROUP]
        located = [pipeline.locate(file.path.read_bytes(), DetectMode.AUTO) for file in group]
        for file, faces in zip(group, pipeline.predict_located(located), strict=True):
            if not faces or file.age is None or file.gender is None:
                continue
            face = max(faces, key=lambda face: face.box.width * face.box.height)
            found[file.name] = (
                float(face.gender.label == GENDER_LABELS[file.gender]),
                float(face.age.bucket == AGE_BUCKET_LABELS[age_bucket(file.age)]),
                abs(face.age.years - file.age),
            )
    return found


def main(argv: list[str] | None = None) -> int:
    """Print the paired comparison of the detectors on the labelled images."""
    from facedemo.detector_names import DETECTOR_NAMES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of the labelled images")
    parser.add_argument("labels", type=Path, help="a label CSV, e.g. from train.split_csv")
    parser.add_argument("--detectors", nargs="+", choices=DETECTOR_NAMES, default=DETECTOR_NAMES)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = {name: outcomes(args.folder, args.labels, name) for name in args.detectors}
    common = sorted(set.intersection(*(set(found) for found in results.values())))
    print(", ".join(f"{name}: a face in {len(found)}" for name, found in results.items()))
    print(f"images where every detector finds a face: {len(common)}")
    values = {name: np.array([found[key] for key in common]) for name, found in results.items()}
    first = args.detectors[0]
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, len(common), (RESAMPLES, len(common)))
    for column, measure in enumerate(MEASURES):
        line = ", ".join(f"{name} {values[name][:, column].mean():.4f}" for name in values)
        for name in args.detectors[1:]:
            difference = values[name][:, column] - values[first][:, column]
            low, high = np.percentile(difference[resamples].mean(axis=1), [2.5, 97.5])
            line += f"; {name} - {first} {difference.mean():+.4f} ({low:+.4f} to {high:+.4f})"
        print(f"{measure}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
