"""Write the training split's calibration and validation sets as label CSVs for `facedemo evaluate`.

    .venv/bin/python -m train.split_csv --data ../shared/data/utkface --out /tmp/splits
    .venv/bin/facedemo evaluate ../shared/data/utkface --labels /tmp/splits/validation.csv --json

The split is the one the training scripts make (same scan, de-duplication, seed and fractions),
so the served pipeline is measured on exactly the faces the manifests' figures come from.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from facedemo.accuracy import RACE_LABELS
from facedemo.manifest import GENDER_LABELS
from train.common import DEFAULT_DATA, DEFAULT_SEED, SPLIT_FRACTIONS
from train.utkface import scan_folder, stratified_split


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    args = parser.parse_args(argv)
    images, _ = scan_folder(args.data)
    splits = stratified_split(images, SPLIT_FRACTIONS, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("calibration", "validation"):
        path = args.out / f"{name}.csv"
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["path", "age", "gender", "race"])
            for item in splits[name]:
                label = item.label
                race = "" if label.race is None else RACE_LABELS[label.race]
                relative = item.path.relative_to(args.data)
                writer.writerow([relative, label.age, GENDER_LABELS[label.gender], race])
        print(f"{path}: {len(splits[name])} faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
