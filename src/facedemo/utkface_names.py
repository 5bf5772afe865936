"""UTKFace labels from file names: `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`.

Shared by the training data loader (train/utkface.py) and `facedemo evaluate`, so a name means
the same labels in training and in evaluation. A few real names are malformed (no race field, a
missing dot, a space before `.jpg`); whatever still yields an age and a gender is parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_AGE = 116
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME_PATTERN = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?:(?P<race>[0-4])_)?\d")


@dataclass(frozen=True)
class FaceLabel:
    """Labels read from one UTKFace file name."""

    age: int
    gender: int  # 0 male, 1 female
    race: int | None


def parse_name(name: str) -> FaceLabel | None:
    """Labels from a UTKFace file name, or None when it holds no valid age and gender."""
    match = _NAME_PATTERN.match(name)
    if match is None:
        return None
    age = int(match["age"])
    if not 1 <= age <= MAX_AGE:
        return None
    race = match["race"]
    return FaceLabel(age=age, gender=int(match["gender"]), race=None if race is None else int(race))
