"""IMDB-WIKI metadata (`wiki.mat` / `imdb.mat`) -> labelled images, for training the age regressor.

The .mat file holds one MATLAB struct, `wiki` or `imdb`, of parallel rows: `dob` (date of birth
as a MATLAB datenum), `photo_taken` (year), `full_path` (relative to the folder of the .mat, as
in `wiki_crop/`), `gender` (1 male, 0 female, NaN unknown), `face_score` (-inf where the detector
found no face) and `second_face_score` (NaN where there is no second face), plus `name` and
`face_location`, which are not used. Rows pass the filters the data set's users apply:

    face_score finite and >= 1.75, no second face, known gender, a real birth date,
    age in 1..100, and the image file exists.

Each dropped row is counted under the first filter it fails (`WikiReport`). The records are the
UTKFace loader's (`LabelledImage` with a `FaceLabel`, race None), so the split, the array cache
and training take them unchanged:

    from train.wiki import load_wiki
    images, report = load_wiki(Path("../wiki_crop/wiki.mat"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from facedemo.utkface_names import FaceLabel
from train.utkface import LabelledImage

MIN_FACE_SCORE = 1.75
MIN_AGE, MAX_AGE = 1, 100
STRUCT_NAMES = ("wiki", "imdb")
FIELDS = ("dob", "photo_taken", "full_path", "gender", "face_score", "second_face_score")
# MATLAB's day 1 is 1 January of year 0 (a leap year); Python's ordinal 1 is 1 January of year 1.
MATLAB_YEAR_ZERO_DAYS = 366
# The metadata's gender code (1 male, 0 female) -> ours (0 male, 1 female).
GENDER_FROM_WIKI = {1: 0, 0: 1}


@dataclass
class WikiReport:
    """How many rows the metadata had, how many each filter dropped, and how many were kept."""

    rows: int = 0
    low_face_score: int = 0
    second_face: int = 0
    unknown_gender: int = 0
    bad_birth_date: int = 0
    age_out_of_range: int = 0
    missing_file: int = 0
    kept: int = 0


def birth_date(datenum: float) -> date | None:
    """The calendar date of a MATLAB datenum, or None if it is not a representable date."""
    if not math.isfinite(datenum) or datenum < 1:
        return None
    try:
        moment = (
            datetime.fromordinal(int(datenum))
            + timedelta(days=datenum % 1)
            - timedelta(days=MATLAB_YEAR_ZERO_DAYS)
        )
    except (ValueError, OverflowError):  # before year 1 or after year 9999
        return None
    return moment.date()


def age_at_photo(born: date, photo_year: int) -> int:
    """Age in whole years when the photo was taken, assumed mid-year (1 July) like the authors.

    Only the year of a photo is known; a person born in July or later has not had that year's
    birthday by then.
    """
    return photo_year - born.year - (1 if born.month >= 7 else 0)


def load_wiki(
    mat_path: Path, images_dir: Path | None = None
) -> tuple[list[LabelledImage], WikiReport]:
    """Labelled images from `wiki.mat` / `imdb.mat`; `images_dir` defaults to the file's folder.

    Raises ValueError when the file is not IMDB-WIKI metadata.
    """
    images_dir = mat_path.parent if images_dir is None else images_dir
    columns = _read_columns(mat_path)
    report = WikiReport(rows=len(columns["dob"]))
    images: list[LabelledImage] = []
    for row in range(report.rows):
        face_score = float(columns["face_score"][row])
        if not math.isfinite(face_score) or face_score < MIN_FACE_SCORE:
            report.low_face_score += 1
            continue
        if not math.isnan(float(columns["second_face_score"][row])):
            report.second_face += 1
            continue
        gender = float(columns["gender"][row])
        if gender not in GENDER_FROM_WIKI:  # NaN (unknown) is in no dict
            report.unknown_gender += 1
            continue
        born = birth_date(float(columns["dob"][row]))
        if born is None:
            report.bad_birth_date += 1
            continue
        age = age_at_photo(born, int(columns["photo_taken"][row]))
        if not MIN_AGE <= age <= MAX_AGE:
            report.age_out_of_range += 1
            continue
        relative = _text(columns["full_path"][row])
        path = images_dir / relative
        if not relative or not path.is_file():
            report.missing_file += 1
            continue
        label = FaceLabel(age=age, gender=GENDER_FROM_WIKI[int(gender)], race=None)
        images.append(LabelledImage(path=path, label=label))
    report.kept = len(images)
    return images, report


def _read_columns(mat_path: Path) -> dict[str, np.ndarray]:
    """The struct's used fields as flat arrays of one length; ValueError if the layout differs."""
    try:
        meta = scipy.io.loadmat(mat_path)
    except (OSError, ValueError, scipy.io.matlab.MatReadError) as error:
        raise ValueError(f"cannot read {mat_path} as a MATLAB file: {error}") from None
    names = [name for name in STRUCT_NAMES if name in meta]
    if len(names) != 1:
        variables = [name for name in meta if not name.startswith("__")]
        raise ValueError(
            f"{mat_path} should hold one struct named {' or '.join(STRUCT_NAMES)}, "
            f"it holds: {', '.join(variables) or 'nothing'}"
        )
    struct = meta[names[0]]
    present = struct.dtype.names or ()
    missing = [field for field in FIELDS if field not in present]
    if missing:
        raise ValueError(f"{mat_path}: struct {names[0]!r} has no field {', '.join(missing)}")
    # loadmat wraps a 1x1 struct as struct[0][0], and each field, a 1xN row, as field[0].
    columns = {field: np.asarray(struct[0][0][field][0]) for field in FIELDS}
    lengths = {field: len(values) for field, values in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{mat_path}: fields have different lengths {lengths}")
    return columns


def _text(cell: Any) -> str:
    """A MATLAB cell's string (loadmat gives an array holding it; an empty cell is empty)."""
    values = np.asarray(cell).ravel()
    return str(values[0]) if values.size else ""
