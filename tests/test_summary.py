"""The crowd summary's arithmetic, against figures worked out by hand."""

from __future__ import annotations

import pytest

from facedemo.manifest import AGE_BUCKET_LABELS
from facedemo.schemas import (
    AgeEstimate,
    AgeInterval,
    BatchSummary,
    Box,
    Face,
    GenderEstimate,
    GenderProbabilities,
    GenderShares,
    ImageCounts,
)
from facedemo.summary import summarize


def face(years: float, bucket: str, gender: str) -> Face:
    """A face with the given age, most probable bucket and gender; the rest does not matter."""
    other = "female" if gender == "male" else "male"
    return Face(
        box=Box(x=0, y=0, width=10, height=10),
        detection_confidence=None,
        landmarks=None,
        age=AgeEstimate(
            years=years,
            interval=AgeInterval(low=years - 5, high=years + 5, level=0.8),
            bucket=bucket,
            bucket_probabilities=dict.fromkeys(AGE_BUCKET_LABELS, 0.2),
            over={},
        ),
        gender=GenderEstimate(
            label=gender,
            confidence=0.9,
            probabilities=GenderProbabilities(**{gender: 0.9, other: 0.1}),
        ),
    )


def test_three_faces() -> None:
    faces = [
        face(20.0, "0-24", "male"),
        face(30.0, "25-49", "female"),
        face(45.5, "25-49", "female"),
    ]

    summary = summarize(faces, images_ok=2, images_failed=1)

    assert summary == BatchSummary(
        faces=3,
        images=ImageCounts(ok=2, failed=1),
        mean_age=31.8,  # 95.5 / 3 = 31.833...
        median_age=30.0,
        gender_shares=GenderShares(male=0.3333, female=0.6667),
        bucket_histogram={"0-24": 1, "25-49": 2, "50-74": 0, "75-99": 0, "100-124": 0},
    )


def test_even_count_median_is_the_mean_of_the_middle_two() -> None:
    faces = [
        face(62.0, "50-74", "male"),
        face(18.0, "0-24", "male"),
        face(80.0, "75-99", "female"),
        face(40.0, "25-49", "male"),
    ]

    summary = summarize(faces, images_ok=4, images_failed=0)

    assert summary.median_age == 51.0  # sorted 18, 40, 62, 80: (40 + 62) / 2
    assert summary.mean_age == 50.0  # 200 / 4
    assert summary.gender_shares == GenderShares(male=0.75, female=0.25)
    assert list(summary.bucket_histogram.items()) == [
        ("0-24", 1),
        ("25-49", 1),
        ("50-74", 1),
        ("75-99", 1),
        ("100-124", 0),
    ]


def test_mean_is_rounded_to_one_decimal() -> None:
    summary = summarize(
        [face(10.0, "0-24", "female"), face(10.0, "0-24", "female"), face(10.1, "0-24", "female")],
        images_ok=1,
        images_failed=0,
    )

    assert summary.mean_age == 10.0  # 30.1 / 3 = 10.0333...
    assert summary.median_age == 10.0
    assert summary.gender_shares == GenderShares(male=0.0, female=1.0)


def test_no_faces_gives_nulls_and_an_empty_histogram() -> None:
    summary = summarize([], images_ok=1, images_failed=3)

    assert summary.faces == 0
    assert summary.images == ImageCounts(ok=1, failed=3)
    assert summary.mean_age is None and summary.median_age is None
    assert summary.gender_shares is None
    assert summary.bucket_histogram == dict.fromkeys(AGE_BUCKET_LABELS, 0)


def test_an_unknown_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown age bucket labels"):
        summarize([face(30.0, "20-30", "male")], images_ok=1, images_failed=0)


def test_negative_image_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        summarize([], images_ok=-1, images_failed=0)
