"""The age thresholds T an age check may ask about ("at least T years old?"): the defaults of
FACEDEMO_AGE_THRESHOLDS and the bounds a setting or a request's `age_over` must keep. Plain
Python, so that the settings and the routes import it without numpy."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DEFAULT_AGE_THRESHOLDS",
    "MAX_THRESHOLD",
    "MAX_THRESHOLDS",
    "MIN_THRESHOLD",
    "thresholds_from",
]

DEFAULT_AGE_THRESHOLDS = (13, 16, 18, 21, 25)  # online-safety and age-restricted-sales ages
MIN_THRESHOLD, MAX_THRESHOLD = 1, 120  # whole years; above the models' ages P is 0
MAX_THRESHOLDS = 8  # per request or setting: each costs a column of every face's answer


def thresholds_from(values: Iterable[int]) -> tuple[int, ...]:
    """The distinct thresholds, in rising order; ValueError naming what is out of bounds."""
    thresholds = tuple(sorted(set(values)))
    out_of_range = [t for t in thresholds if not MIN_THRESHOLD <= t <= MAX_THRESHOLD]
    if out_of_range:
        raise ValueError(
            f"age thresholds must be whole years from {MIN_THRESHOLD} to {MAX_THRESHOLD}, "
            f"got {out_of_range}"
        )
    if len(thresholds) > MAX_THRESHOLDS:
        raise ValueError(f"at most {MAX_THRESHOLDS} age thresholds, got {len(thresholds)}")
    return thresholds
