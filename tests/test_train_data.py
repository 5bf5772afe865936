"""Training data: UTKFace names, de-duplication, stratified split, array cache and checksums."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facedemo.imaging
from facedemo.imaging import decode_image, resize_rgb
from facedemo.manifest import age_bucket
from facedemo.utkface_names import FaceLabel, parse_name
from train.utkface import (
    LabelledImage,
    dataset_checksum,
    load_arrays,
    random_subset,
    scan_folder,
    stratified_split,
)

# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("26_1_2_20170116174525125.jpg.chip.jpg", FaceLabel(age=26, gender=1, race=2)),
        ("1_0_4_20161221193016140.jpg.chip.jpg", FaceLabel(age=1, gender=0, race=4)),
        ("116_1_0_20170120134921760.jpg.chip.jpg", FaceLabel(age=116, gender=1, race=0)),
        # The malformed names of the real data set: still labelled.
        ("61_1_20170109150557335.jpg.chip.jpg", FaceLabel(age=61, gender=1, race=None)),
        ("55_0_0_20170116232725357jpg.chip.jpg", FaceLabel(age=55, gender=0, race=0)),
        ("24_0_1_20170116220224657 .jpg.chip.jpg", FaceLabel(age=24, gender=0, race=1)),
    ],
)
def test_parse_name_reads_age_gender_and_race(name: str, expected: FaceLabel) -> None:
    assert parse_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "0_0_0_20170110220208546.jpg.chip.jpg",  # age 0 is not an age in UTKFace
        "117_0_0_20170110220208546.jpg.chip.jpg",  # beyond the oldest age in the data
        "1234_0_0_20170110220208546.jpg.chip.jpg",
        "30_2_0_20170110220208546.jpg.chip.jpg",  # gender is 0 or 1
        "30_0_.jpg.chip.jpg",  # nothing after the gender
        "30-0-0-20170110220208546.jpg",
        "_0_0_20170110220208546.jpg",
        "face.jpg",
        "Thumbs.db",
        "",
    ],
)
def test_parse_name_rejects_names_without_a_valid_age_and_gender(name: str) -> None:
    assert parse_name(name) is None


def test_the_training_loader_uses_the_package_parser() -> None:
    import train.utkface

    assert train.utkface.parse_name is parse_name
    assert train.utkface.FaceLabel is FaceLabel


# ----------------------------------------------------------------------------- scan_folder


def jpeg_bytes(seed: int, side: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def face_folder(tmp_path: Path) -> Path:
    """Six images: a same-label duplicate pair, a conflicting pair, one single, one bad name."""
    folder = tmp_path / "utkface"
    folder.mkdir()
    files = {
        "30_0_0_20170101000000001.jpg.chip.jpg": jpeg_bytes(1),
        "30_0_0_20170101000000002.jpg.chip.jpg": jpeg_bytes(1),  # byte copy, same labels
        "40_1_0_20170101000000003.jpg.chip.jpg": jpeg_bytes(2),
        "41_1_0_20170101000000004.jpg.chip.jpg": jpeg_bytes(2),  # byte copy, another age
        "50_1_2_20170101000000005.jpg.chip.jpg": jpeg_bytes(3),
        "not_a_label.jpg": jpeg_bytes(4),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "README.txt").write_text("not an image")
    (folder / "sub.jpg").mkdir()  # a folder, whatever its name
    return folder


def test_scan_folder_drops_duplicates_and_conflicting_groups_and_counts_them(
    face_folder: Path,
) -> None:
    images, report = scan_folder(face_folder)

    assert [image.path.name for image in images] == [
        "30_0_0_20170101000000001.jpg.chip.jpg",
        "50_1_2_20170101000000005.jpg.chip.jpg",
    ]
    assert images[1].label == FaceLabel(age=50, gender=1, race=2)
    assert report.files == 6
    assert report.parsed == 5
    assert report.unparseable == ["not_a_label.jpg"]
    assert report.duplicate_groups == 2
    assert report.duplicates_dropped == 2
    assert report.conflicting_groups_dropped == 1


def test_scan_folder_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- split


def synthetic_images(count: int, seed: int = 0) -> list[LabelledImage]:
    """Labelled file names (no files): ages skewed towards the young, like UTKFace."""
    rng = np.random.default_rng(seed)
    ages = np.clip(rng.gamma(2.0, 18.0, count).astype(int) + 1, 1, 116)
    genders = rng.integers(0, 2, count)
    return [
        LabelledImage(
            Path(f"{age}_{gender}_0_{index:08d}.jpg.chip.jpg"),
            FaceLabel(age=int(age), gender=int(gender), race=0),
        )
        for index, (age, gender) in enumerate(zip(ages, genders, strict=True))
    ]


FRACTIONS = {"train": 0.8, "validation": 0.2}


def names(images: list[LabelledImage]) -> list[str]:
    return [image.path.name for image in images]


def test_split_is_deterministic_and_independent_of_input_order() -> None:
    images = synthetic_images(600)
    shuffled = [images[i] for i in np.random.default_rng(5).permutation(len(images))]

    first = stratified_split(images, FRACTIONS, seed=1234)
    again = stratified_split(shuffled, FRACTIONS, seed=1234)

    assert {k: names(v) for k, v in first.items()} == {k: names(v) for k, v in again.items()}


def test_a_different_seed_gives_a_different_split() -> None:
    images = synthetic_images(600)

    first = stratified_split(images, FRACTIONS, seed=1234)
    other = stratified_split(images, FRACTIONS, seed=4321)

    assert set(names(first["validation"])) != set(names(other["validation"]))
    assert len(first["validation"]) == len(other["validation"])


def test_split_parts_are_disjoint_cover_everything_and_keep_the_strata() -> None:
    images = synthetic_images(1000)

    splits = stratified_split(images, FRACTIONS, seed=7)

    train, validation = set(names(splits["train"])), set(names(splits["validation"]))
    assert not train & validation
    assert train | validation == set(names(images))

    def strata(items: list[LabelledImage]) -> Counter[tuple[int, int]]:
        return Counter((age_bucket(item.label.age), item.label.gender) for item in items)

    everything = strata(images)
    held_out = strata(splits["validation"])
    assert len(everything) >= 8  # the test data really has several strata, rare ones included
    for stratum, size in everything.items():
        # Each (bucket, gender) stratum is split on its own, so its share is 20% up to rounding.
        assert abs(held_out[stratum] - FRACTIONS["validation"] * size) <= 1, stratum


def test_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(synthetic_images(10), {"train": 0.8, "validation": 0.1}, seed=0)


def test_a_smoke_run_subset_is_seeded_and_spans_the_ages() -> None:
    images = sorted(synthetic_images(1000), key=lambda image: image.path.name)

    subset = random_subset(images, 100, seed=3)

    assert names(subset) == names(random_subset(images, 100, seed=3))
    assert names(subset) != names(random_subset(images, 100, seed=4))
    assert len(set(names(subset))) == 100 and set(names(subset)) <= set(names(images))
    assert names(subset) == sorted(names(subset))

    # Names start with the age, which sorts as text (1, 10, 100, 11, ...): the first 100 names
    # are children, teenagers and centenarians; the random subset has the whole set's mix.
    def bucket_shares(items: list[LabelledImage]) -> np.ndarray:
        buckets = [age_bucket(item.label.age) for item in items]
        return np.bincount(buckets, minlength=5) / len(items)

    assert np.abs(bucket_shares(subset) - bucket_shares(images)).max() < 0.1
    assert np.abs(bucket_shares(images[:100]) - bucket_shares(images)).max() > 0.3


# ----------------------------------------------------------------------------- arrays and cache


def test_load_arrays_decodes_resizes_and_a_cache_hit_decodes_nothing(
    face_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = scan_folder(face_folder)
    cache_dir = tmp_path / "cache"

    first = load_arrays(images, 8, cache_dir)

    assert first.images.shape == (2, 8, 8, 3) and first.images.dtype == np.uint8
    expected = resize_rgb(decode_image(images[0].path.read_bytes(), max_pixels=10_000), (8, 8))
    np.testing.assert_array_equal(first.images[0], expected)
    assert first.ages.tolist() == [30, 50]
    assert first.genders.tolist() == [0, 1]
    assert first.races.tolist() == [0, 2]
    assert len(list(cache_dir.glob("*.npz"))) == 1

    def refuse(data: bytes, *, max_pixels: int) -> np.ndarray:
        raise AssertionError("decoded although the arrays were cached")

    monkeypatch.setattr(facedemo.imaging, "decode_image", refuse)
    second = load_arrays(images, 8, cache_dir)

    np.testing.assert_array_equal(second.images, first.images)
    assert second.names == first.names
    assert second.ages.tolist() == first.ages.tolist()
    # Another size is another cache entry: it would have to decode.
    with pytest.raises(AssertionError, match="decoded although"):
        load_arrays(images, 10, cache_dir)


def test_load_arrays_marks_an_unknown_race_as_minus_one(tmp_path: Path) -> None:
    path = tmp_path / "61_1_20170109150557335.jpg.chip.jpg"
    path.write_bytes(jpeg_bytes(9))

    label = parse_name(path.name)
    assert label is not None

    arrays = load_arrays([LabelledImage(path, label)], 8, None)

    assert arrays.races.tolist() == [-1]


# ----------------------------------------------------------------------------- checksum


def test_dataset_checksum_is_stable_and_depends_only_on_names_and_labels(tmp_path: Path) -> None:
    images = [
        LabelledImage(Path("a/30_0_0_1.jpg"), FaceLabel(age=30, gender=0, race=0)),
        LabelledImage(Path("a/61_1_2.jpg"), FaceLabel(age=61, gender=1, race=None)),
    ]
    moved = [LabelledImage(tmp_path / image.path.name, image.label) for image in images]
    relabelled = [images[0], LabelledImage(images[1].path, FaceLabel(age=62, gender=1, race=None))]

    checksum = dataset_checksum(images)

    # Pinned: manifests and the array cache record this value, so its recipe must not drift.
    assert checksum == "284849a91df73c80ea9ca327f92b78a6255614e729eb533dca3afec97020d480"
    assert dataset_checksum(list(reversed(images))) == checksum
    assert dataset_checksum(moved) == checksum
    assert dataset_checksum(relabelled) != checksum
    assert dataset_checksum(images[:1]) != checksum


def test_scan_then_checksum_is_the_same_for_a_copied_folder(
    face_folder: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(face_folder, tmp_path / "copy")

    assert dataset_checksum(scan_folder(copy)[0]) == dataset_checksum(scan_folder(face_folder)[0])
