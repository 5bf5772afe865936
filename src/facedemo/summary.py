"""The crowd summary of a batch: how many faces, how old, which genders, which age buckets.

Pure arithmetic over the pipeline's `Face`s (no models, no HTTP), so the batch endpoint and
any later caller report the same figures, as the answer's own `BatchSummary`. Each face counts
once, by its most probable gender label and age bucket; ages are the regressor's expected years.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

from facedemo.manifest import AGE_BUCKET_LABELS, GENDER_LABELS
from facedemo.pipeline import PROBABILITY_DIGITS, YEARS_DIGITS
from facedemo.schemas import BatchSummary, Face, GenderShares, ImageCounts


def summarize(faces: Sequence[Face], *, images_ok: int, images_failed: int) -> BatchSummary:
    """Count, mean and median age, gender shares and bucket histogram of `faces`.

    Ages are rounded to one decimal and shares to four, like the per-face figures.
    """
    if images_ok < 0 or images_failed < 0:
        raise ValueError(f"image counts must not be negative, got {images_ok}, {images_failed}")
    histogram = _histogram((face.age.bucket for face in faces), AGE_BUCKET_LABELS, "age bucket")
    images = ImageCounts(ok=images_ok, failed=images_failed)
    if not faces:
        return BatchSummary(
            faces=0,
            images=images,
            mean_age=None,
            median_age=None,
            gender_shares=None,
            bucket_histogram=histogram,
        )
    ages = [face.age.years for face in faces]
    genders = _histogram((face.gender.label for face in faces), GENDER_LABELS, "gender")
    return BatchSummary(
        faces=len(faces),
        images=images,
        mean_age=round(statistics.fmean(ages), YEARS_DIGITS),
        median_age=round(statistics.median(ages), YEARS_DIGITS),
        gender_shares=GenderShares(
            **{
                label: round(count / len(faces), PROBABILITY_DIGITS)
                for label, count in genders.items()
            }
        ),
        bucket_histogram=histogram,
    )


def _histogram(labels: Iterable[str], known: tuple[str, ...], kind: str) -> dict[str, int]:
    """Count of each known label, in the known order; a label outside them is a ValueError."""
    counts = Counter(labels)
    unknown = set(counts) - set(known)
    if unknown:
        raise ValueError(f"unknown {kind} labels {sorted(unknown)}; expected {list(known)}")
    return {label: counts[label] for label in known}
