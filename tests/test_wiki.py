"""The IMDB-WIKI metadata loader, on a small .mat written in the real layout."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from tests.wiki_data import ROWS, write_metadata

from facedemo.utkface_names import FaceLabel
from train.wiki import age_at_photo, birth_date, load_wiki

NAN = math.nan


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
