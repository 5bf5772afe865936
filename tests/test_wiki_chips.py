"""WIKI photos -> chips: decoding, dropping faceless photos, caching, and the regressor's --wiki."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from tests.wiki_data import ROWS, write_metadata, write_photos

from train.utkface import ArraySet, concatenate
from train.wiki_chips import load_chips, wiki_training_rows

SIZE = 16


def grey_chip_unless_dark(image: np.ndarray) -> np.ndarray | None:
    """A stand-in detector: 'no face' in dark photos, else a SIZE x SIZE chip of the photo."""
    if image.mean() < 15:
        return None
    return np.full((SIZE, SIZE, 3), image[0, 0], dtype=np.uint8)


def test_chips_keep_faces_with_their_labels_and_count_the_rest(tmp_path: Path) -> None:
    mat_path = write_metadata(tmp_path)
    write_photos(mat_path)
    calls: list[int] = []

    def counting_chip(image: np.ndarray) -> np.ndarray | None:
        calls.append(1)
        return grey_chip_unless_dark(image)

    arrays, record = wiki_training_rows(mat_path, SIZE, tmp_path / "cache", counting_chip)
    kept_rows = [row for row, (*_rest, reason) in enumerate(ROWS) if reason == "kept"]
    assert record["passed_filters"] == len(kept_rows)
    assert record["used"] == len(kept_rows) == len(arrays.names)
    assert record["no_face"] == record["undecodable"] == 0
    assert arrays.ages.tolist() == [28, 24, 100]  # the labels tests/test_wiki.py checks
    assert arrays.genders.tolist() == [0, 1, 0]
    assert arrays.images.shape == (record["used"], SIZE, SIZE, 3)
    assert (arrays.races == -1).all()
    first_calls = len(calls)

    again, _ = wiki_training_rows(mat_path, SIZE, tmp_path / "cache", counting_chip)
    assert len(calls) == first_calls  # served from the cache
    np.testing.assert_array_equal(again.images, arrays.images)
    np.testing.assert_array_equal(again.ages, arrays.ages)


def test_undecodable_and_faceless_photos_are_dropped(tmp_path: Path) -> None:
    mat_path = write_metadata(tmp_path)
    write_photos(mat_path)
    from train.wiki import load_wiki

    images, _ = load_wiki(mat_path)
    images[0].path.write_bytes(b"not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(buffer, "PNG")
    images[1].path.write_bytes(buffer.getvalue())

    arrays, report = load_chips(images, SIZE, None, grey_chip_unless_dark)

    assert report.undecodable == 1 and report.no_face == 1
    assert report.kept == len(images) - 2 == len(arrays.names)
    assert str(images[0].path) not in arrays.names and str(images[1].path) not in arrays.names


def test_concatenate_keeps_rows_in_order() -> None:
    def rows(start: int, count: int) -> ArraySet:
        ages = np.arange(start, start + count, dtype=np.int32)
        return ArraySet(
            images=np.zeros((count, 2, 2, 3), np.uint8),
            ages=ages,
            genders=ages % 2,
            races=np.full(count, -1, np.int32),
            names=[str(age) for age in ages],
        )

    both = concatenate(rows(0, 2), rows(10, 3))
    assert both.ages.tolist() == [0, 1, 10, 11, 12] and both.names == ["0", "1", "10", "11", "12"]
    assert both.images.shape == (5, 2, 2, 3)
