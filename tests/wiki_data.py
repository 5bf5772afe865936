"""A small IMDB-WIKI dataset on disk: the metadata .mat in the real layout, and its photos.

`ROWS` holds one row per image with the filter it should fall to ("kept" for the ones that pass);
`write_metadata` writes them as `<struct_name>.mat`, `write_photos` real images for the kept rows.
"""

from __future__ import annotations

import io
import math
from datetime import date
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

NAN = math.nan


def datenum(year: int, month: int, day: int, fraction: float = 0.0) -> float:
    """MATLAB's datenum of a date: days since 31 December of year -1 (year 0 has 366 days)."""
    return date(year, month, day).toordinal() + 366 + fraction


def cells(values: list[object]) -> np.ndarray:
    """A 1xN MATLAB cell array, as savemat writes and loadmat reads one."""
    array = np.empty((1, len(values)), dtype=object)
    for index, value in enumerate(values):
        array[0, index] = value
    return array


# (file, dob datenum, photo_taken, gender (1 male, 0 female), face_score, second_face_score, why)
ROWS = [
    ("17/10000217_1981-05-05_2009.jpg", 723671.0, 2009, 1.0, 4.3, NAN, "kept"),
    ("48/4800_1990-08-20_2015.jpg", datenum(1990, 8, 20, 0.25), 2015, 0.0, 2.0, NAN, "kept"),
    ("10/100_1910-01-10_2010.jpg", datenum(1910, 1, 10), 2010, 1.0, 1.75, NAN, "kept"),
    ("01/no_face.jpg", datenum(1980, 1, 1), 2010, 1.0, -math.inf, NAN, "low_face_score"),
    ("01/weak_face.jpg", datenum(1980, 1, 1), 2010, 1.0, 1.5, NAN, "low_face_score"),
    ("01/nan_face.jpg", datenum(1980, 1, 1), 2010, 1.0, NAN, NAN, "low_face_score"),
    ("02/two_faces.jpg", datenum(1980, 1, 1), 2010, 1.0, 3.0, 1.2, "second_face"),
    ("03/who.jpg", datenum(1980, 1, 1), 2010, NAN, 3.0, NAN, "unknown_gender"),
    ("04/bad_dob.jpg", 200.0, 2010, 0.0, 3.0, NAN, "bad_birth_date"),
    ("05/old.jpg", datenum(1900, 2, 1), 2010, 0.0, 3.0, NAN, "age_out_of_range"),
    ("05/newborn.jpg", datenum(2010, 3, 1), 2010, 0.0, 3.0, NAN, "age_out_of_range"),
    ("05/unborn.jpg", datenum(2012, 3, 1), 2010, 0.0, 3.0, NAN, "age_out_of_range"),
    ("06/gone.jpg", datenum(1980, 1, 1), 2010, 0.0, 3.0, NAN, "missing_file"),
]


def write_metadata(folder: Path, struct_name: str = "wiki") -> Path:
    """`<struct_name>.mat` in the IMDB-WIKI layout, and every image file except the missing one."""
    files, dobs, taken, genders, scores, seconds, reasons = zip(*ROWS, strict=True)
    metadata = {
        "dob": np.array([dobs], dtype=np.float64),
        "photo_taken": np.array([taken], dtype=np.uint16),
        "full_path": cells([np.array([name]) for name in files]),
        "gender": np.array([genders], dtype=np.float64),
        "name": cells([np.array([f"Person {index}"]) for index in range(len(ROWS))]),
        "face_location": cells([np.array([[10.0, 12.0, 90.0, 95.0]]) for _ in ROWS]),
        "face_score": np.array([scores], dtype=np.float64),
        "second_face_score": np.array([seconds], dtype=np.float64),
    }
    mat_path = folder / f"{struct_name}.mat"
    scipy.io.savemat(mat_path, {struct_name: metadata})
    for name, reason in zip(files, reasons, strict=True):
        if reason != "missing_file":
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"image bytes are not read by the loader")
    return mat_path


def write_photos(mat_path: Path) -> None:
    """Real (PNG) images for the rows that pass the metadata filters, each a light grey."""
    for row, (name, *_rest, reason) in enumerate(ROWS):
        if reason == "kept":
            grey = 100 + 10 * row
            buffer = io.BytesIO()
            Image.new("RGB", (40, 30), (grey, grey, grey)).save(buffer, "PNG")
            (mat_path.parent / name).write_bytes(buffer.getvalue())
