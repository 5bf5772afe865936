"""The IMDB-WIKI metadata loader, on a small .mat written in the real layout."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from facedemo.utkface_names import FaceLabel
from train.wiki import age_at_photo, birth_date, load_wiki

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


def test_the_written_file_has_the_real_nesting(tmp_path: Path) -> None:
    meta = scipy.io.loadmat(write_metadata(tmp_path))

    assert meta["wiki"][0][0]["dob"][0][0] == 723671.0
    assert meta["wiki"][0][0]["full_path"][0][0][0] == "17/10000217_1981-05-05_2009.jpg"


def test_load_wiki_keeps_the_rows_that_pass_every_filter_with_their_labels(tmp_path: Path) -> None:
    images, report = load_wiki(write_metadata(tmp_path))

    assert [image.path for image in images] == [
        tmp_path / "17/10000217_1981-05-05_2009.jpg",
        tmp_path / "48/4800_1990-08-20_2015.jpg",
        tmp_path / "10/100_1910-01-10_2010.jpg",
    ]
    assert [image.label for image in images] == [
        FaceLabel(age=28, gender=0, race=None),  # born May 1981, photo 2009; wiki 1 = male
        FaceLabel(age=24, gender=1, race=None),  # born August 1990: no 2015 birthday by July
        FaceLabel(age=100, gender=0, race=None),  # face score exactly 1.75, age exactly 100
    ]


def test_load_wiki_counts_what_each_filter_dropped(tmp_path: Path) -> None:
    _, report = load_wiki(write_metadata(tmp_path))

    expected = {
        reason: sum(1 for row in ROWS if row[-1] == reason)
        for reason in ("low_face_score", "second_face", "unknown_gender", "bad_birth_date")
    }
    assert asdict(report) == {
        "rows": len(ROWS),
        **expected,
        "age_out_of_range": 3,
        "missing_file": 1,
        "kept": 3,
    }
    assert expected == {
        "low_face_score": 3,
        "second_face": 1,
        "unknown_gender": 1,
        "bad_birth_date": 1,
    }


def test_load_wiki_reads_imdb_metadata_and_a_separate_image_folder(tmp_path: Path) -> None:
    metadata_dir = tmp_path / "meta"
    images_dir = tmp_path / "imdb_crop"
    metadata_dir.mkdir()
    images_dir.mkdir()
    mat_path = write_metadata(images_dir, struct_name="imdb").rename(metadata_dir / "imdb.mat")

    images, report = load_wiki(mat_path, images_dir=images_dir)

    assert report.kept == 3
    assert images[0].path == images_dir / "17/10000217_1981-05-05_2009.jpg"


def test_load_wiki_refuses_a_file_that_is_not_imdb_wiki_metadata(tmp_path: Path) -> None:
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"faces": np.zeros((2, 2))})
    broken = tmp_path / "wiki.mat"
    scipy.io.savemat(broken, {"wiki": {"dob": np.array([[723671.0]])}})
    not_matlab = tmp_path / "text.mat"
    not_matlab.write_text("hello")

    with pytest.raises(ValueError, match="one struct named wiki or imdb"):
        load_wiki(other)
    with pytest.raises(ValueError, match="no field photo_taken"):
        load_wiki(broken)
    with pytest.raises(ValueError, match="cannot read"):
        load_wiki(not_matlab)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (723671.0, date(1981, 5, 5)),
        (723671.99, date(1981, 5, 5)),
        (367.0, date(1, 1, 1)),
        (366.0, None),  # 31 December of year 0: not a Python date
        (0.0, None),
        (NAN, None),
        (math.inf, None),
        (1e9, None),
    ],
)
def test_birth_date_converts_matlab_datenums(value: float, expected: date | None) -> None:
    assert birth_date(value) == expected


def test_age_assumes_the_photo_was_taken_on_1_july() -> None:
    assert age_at_photo(date(1981, 6, 30), 2009) == 28
    assert age_at_photo(date(1981, 7, 1), 2009) == 27
    assert age_at_photo(date(1981, 12, 31), 2009) == 27
