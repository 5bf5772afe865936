"""UTKFace: parse labels from file names, de-duplicate by content, split, and cache decoded arrays.

File names are `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`; a few real names are malformed (no race
field, a missing dot, a space before `.jpg`). Whatever still yields an age and a gender is kept;
the rest is skipped and counted. The name parser lives in `facedemo.utkface_names`, shared with
`facedemo evaluate`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS
from facedemo.manifest import age_bucket
from facedemo.utkface_names import IMAGE_SUFFIXES, FaceLabel, parse_name


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: FaceLabel


@dataclass
class ScanReport:
    """What a scan of a folder found, for the manifest and the console."""

    files: int = 0
    parsed: int = 0
    unparseable: list[str] = field(default_factory=list)
    duplicate_groups: int = 0
    duplicates_dropped: int = 0
    conflicting_groups_dropped: int = 0


def scan_folder(folder: Path) -> tuple[list[LabelledImage], ScanReport]:
    """Parse every image name in `folder` and drop exact duplicates (keeping one per group).

    Duplicate groups whose labels disagree are dropped whole: we cannot tell which label is right.
    """
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} does not exist or is not a folder")
    report = ScanReport()
    by_digest: dict[str, list[LabelledImage]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        report.files += 1
        label = parse_name(path.name)
        if label is None:
            report.unparseable.append(path.name)
            continue
        report.parsed += 1
        by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append(LabelledImage(path, label))
    images: list[LabelledImage] = []
    for group in by_digest.values():
        if len(group) > 1:
            report.duplicate_groups += 1
            report.duplicates_dropped += len(group) - 1
            if len({(item.label.age, item.label.gender) for item in group}) > 1:
                report.conflicting_groups_dropped += 1
                continue
        images.append(group[0])
    images.sort(key=lambda item: item.path.name)
    return images, report


def stratified_split(
    images: list[LabelledImage], fractions: dict[str, float], seed: int
) -> dict[str, list[LabelledImage]]:
    """Split deterministically, stratified by (age bucket, gender); fractions must sum to 1.

    Items are ordered by file name before shuffling, so the split depends only on the set of
    files and the seed, not on the order the file system lists them in.
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-9:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    strata: dict[tuple[int, int], list[LabelledImage]] = defaultdict(list)
    for item in sorted(images, key=lambda image: image.path.name):
        strata[(age_bucket(item.label.age), item.label.gender)].append(item)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[LabelledImage]] = {name: [] for name in fractions}
    for key in sorted(strata):
        members = strata[key]
        order = rng.permutation(len(members))
        start = 0
        names = list(fractions)
        for index, name in enumerate(names):
            if index == len(names) - 1:
                stop = len(members)
            else:
                stop = start + int(round(fractions[name] * len(members)))
            splits[name].extend(members[i] for i in order[start:stop])
            start = stop
    for name in splits:
        splits[name].sort(key=lambda image: image.path.name)
    return splits


def random_subset(images: list[LabelledImage], count: int, seed: int) -> list[LabelledImage]:
    """`count` images drawn at random (seeded), in file-name order: a smoke run's training set.

    Not the first `count` names: names start with the age, sorted as text (1, 10, 100, 11, ...),
    so those would be children, teenagers and centenarians only.
    """
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    return sorted((images[i] for i in order), key=lambda image: image.path.name)


def dataset_checksum(images: list[LabelledImage]) -> str:
    """sha256 over the sorted file names and labels: identifies the exact data a model saw."""
    digest = hashlib.sha256()
    for item in sorted(images, key=lambda image: image.path.name):
        label = item.label
        digest.update(f"{item.path.name}|{label.age}|{label.gender}|{label.race}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ArraySet:
    """Decoded images and their labels, aligned by row."""

    images: np.ndarray  # (n, size, size, 3) uint8
    ages: np.ndarray  # (n,) int32
    genders: np.ndarray  # (n,) int32
    races: np.ndarray  # (n,) int32, -1 when unknown
    names: list[str]


def concatenate(first: ArraySet, second: ArraySet) -> ArraySet:
    """One ArraySet with the rows of both."""
    return ArraySet(
        images=np.concatenate([first.images, second.images]),
        ages=np.concatenate([first.ages, second.ages]),
        genders=np.concatenate([first.genders, second.genders]),
        races=np.concatenate([first.races, second.races]),
        names=first.names + second.names,
    )


def read_rgb(path: Path) -> np.ndarray:
    """The photo at `path` as an RGB array, decoded the way the service decodes an upload."""
    from facedemo.imaging import decode_image

    return decode_image(path.read_bytes(), max_pixels=DEFAULT_MAX_IMAGE_PIXELS)


def load_arrays(images: list[LabelledImage], size: int, cache_dir: Path | None) -> ArraySet:
    """Decode and resize `images` to size x size, reusing a cache keyed by content and size."""
    from facedemo.imaging import resize_rgb

    key = hashlib.sha256(f"{dataset_checksum(images)}|{size}|v1".encode()).hexdigest()[:16]
    cache_file = None if cache_dir is None else cache_dir / f"utkface-{size}-{key}.npz"
    names = [item.path.name for item in images]
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file) as cached:
            pixels = cached["images"]
    else:
        pixels = np.empty((len(images), size, size, 3), dtype=np.uint8)
        for row, item in enumerate(images):
            pixels[row] = resize_rgb(read_rgb(item.path), (size, size))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache_file, images=pixels)
            cache_file.with_suffix(".json").write_text(json.dumps({"names": names}))
    return ArraySet(
        images=pixels,
        ages=np.array([item.label.age for item in images], dtype=np.int32),
        genders=np.array([item.label.gender for item in images], dtype=np.int32),
        races=np.array(
            [-1 if item.label.race is None else item.label.race for item in images], dtype=np.int32
        ),
        names=names,
    )
