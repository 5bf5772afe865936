"""Accuracy of the served pipeline on a labelled image set: what `facedemo evaluate` runs.

A labelled set is a folder of UTKFace-named images (labels in the file names), or a folder plus a
CSV with a `path` column (relative to the folder) and any of `age`, `gender` (male/female) and
`race`. Every image goes through the same `Pipeline` as an API upload (decode, locate faces,
registry), so the figures describe what clients get, rounded as they get it. Images are decoded
on a small thread pool one group ahead of the models, and each group's faces run through the
registry in one call. Knows no HTTP and prints nothing: the CLI formats the report.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedemo.accuracy import RACE_LABELS, Estimates, Labels, evaluation_report
from facedemo.age_checks import age_bands, age_check_figures
from facedemo.detect_mode import DetectMode
from facedemo.errors import InputError
from facedemo.manifest import AGE_BUCKET_LABELS, GENDER_LABELS
from facedemo.pipeline import LocatedImage, Pipeline
from facedemo.schemas import Face
from facedemo.utkface_names import IMAGE_SUFFIXES, parse_name

# Images per registry call: large enough that the per-call overhead vanishes, small enough that a
# group of decoded crops stays a few megabytes.
GROUP_SIZE = 64
# True-age bands of the age checks' group figures: children, the usual thresholds, adults.
AGE_BANDS = (0, 13, 16, 18, 21, 25, 30, 40, 60)
DECODE_WORKERS = 2
NOT_A_UTKFACE_NAME = "no age and gender in the file name (not a UTKFace name)"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelledFile:
    """One image of a labelled set; a label is None where the set does not give it."""

    name: str  # as the set names it: relative to its folder
    path: Path
    age: float | None
    gender: int | None  # index into GENDER_LABELS
    race: int | None  # index into metrics.RACE_LABELS


@dataclass(frozen=True)
class LabelledSet:
    """The images to evaluate, and the names of images that carry no usable labels."""

    files: list[LabelledFile]
    unlabelled: list[str]


def load_labelled_set(folder: Path, labels_csv: Path | None = None) -> LabelledSet:
    """A UTKFace-named folder, or `folder` with labels from `labels_csv`; InputError if unusable."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if labels_csv is None:
        return utkface_set(folder)
    return csv_set(folder, labels_csv)


def utkface_set(folder: Path) -> LabelledSet:
    """Every image in `folder` labelled from its UTKFace file name, in name order."""
    files: list[LabelledFile] = []
    unlabelled: list[str] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        label = parse_name(path.name)
        if label is None:
            unlabelled.append(path.name)
            continue
        files.append(LabelledFile(path.name, path, float(label.age), label.gender, label.race))
    if not files:
        raise InputError(
            f"no UTKFace-named images (AGE_GENDER_RACE_DATE.jpg) in {folder}; for other folders "
            "give the labels as a CSV with --labels"
        )
    return LabelledSet(files=files, unlabelled=unlabelled)


def csv_set(folder: Path, labels_csv: Path) -> LabelledSet:
    """The images listed in `labels_csv` (columns `path` and any of age, gender, race), in order."""
    try:
        text = labels_csv.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read labels file {labels_csv}: {error}") from None
    reader = csv.DictReader(text.splitlines())
    columns = [column.strip().lower() for column in reader.fieldnames or []]
    reader.fieldnames = columns
    if "path" not in columns or not {"age", "gender"} & set(columns):
        raise InputError(
            f"{labels_csv} needs a 'path' column and at least one of 'age', 'gender' "
            f"(it has: {', '.join(columns) or 'no header'})"
        )
    files = []
    for line, row in enumerate(reader, start=2):
        where = f"{labels_csv} line {line}"
        name = (row.get("path") or "").strip()
        if not name:
            raise InputError(f"{where}: empty path")
        files.append(
            LabelledFile(
                name=name,
                path=folder / name,
                age=_csv_age(row.get("age"), where),
                gender=_csv_choice(row.get("gender"), GENDER_LABELS, "gender", where),
                race=_csv_choice(row.get("race"), RACE_LABELS, "race", where),
            )
        )
    if not files:
        raise InputError(f"{labels_csv} lists no images")
    return LabelledSet(files=files, unlabelled=[])


def _csv_age(value: str | None, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        age = float(value)
    except ValueError:
        raise InputError(f"{where}: age {value!r} is not a number") from None
    if not math.isfinite(age) or age < 0:
        raise InputError(f"{where}: age {value!r} is not an age in years")
    return age


def _csv_choice(value: str | None, choices: Sequence[str], column: str, where: str) -> int | None:
    if value is None or not value.strip():
        return None
    text = value.strip().lower()
    if text not in choices:
        raise InputError(f"{where}: {column} {value!r} is not one of {', '.join(choices)}")
    return choices.index(text)


def evaluate(
    pipeline: Pipeline,
    labelled: LabelledSet,
    detect: DetectMode,
    *,
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every image through `pipeline` and measure its largest face against the labels.

    Returns `metrics.evaluation_report`'s figures (n counts the faces measured) plus `no_face`
    (images where no face was found), `errors` (images that could not be read or decoded, and
    UTKFace names without labels: [{"file", "error"}]), `models`, `detect` and `seconds`.
    `limit` keeps the first N images; `progress(done, total)` is called after each group.
    """
    started = time.perf_counter()
    files = labelled.files[:limit] if limit else labelled.files
    errors = [{"file": name, "error": NOT_A_UTKFACE_NAME} for name in labelled.unlabelled]
    measured: list[tuple[LabelledFile, Face]] = []
    no_face = 0
    done = 0
    for group, outcomes in _located_groups(pipeline, files, detect):
        located = list(zip(group, outcomes, strict=True))
        readable = [(file, image) for file, image in located if isinstance(image, LocatedImage)]
        errors.extend(
            {"file": file.name, "error": outcome}
            for file, outcome in located
            if isinstance(outcome, str)
        )
        faces = pipeline.predict_located([image for _, image in readable])
        for (file, _), image_faces in zip(readable, faces, strict=True):
            if image_faces:
                measured.append((file, max(image_faces, key=_face_area)))
            else:
                no_face += 1
        done += len(group)
        if progress is not None:
            progress(done, len(files))
    report = evaluation_report(*_labels_and_estimates(measured))
    report["age_checks"] = _age_checks(measured)
    report.update(
        no_face=no_face,
        errors=errors,
        models=[
            {"name": model.name, "version": model.version} for model in pipeline.models_for(detect)
        ],
        detect=detect.value,
        seconds=round(time.perf_counter() - started, 2),
    )
    return report


def _located_groups(
    pipeline: Pipeline, files: list[LabelledFile], detect: DetectMode
) -> Iterator[tuple[list[LabelledFile], list[LocatedImage | str]]]:
    """Groups of files with their located faces (or an error message), decoded one group ahead."""
    groups = [files[start : start + GROUP_SIZE] for start in range(0, len(files), GROUP_SIZE)]
    with ThreadPoolExecutor(max_workers=DECODE_WORKERS) as pool:

        def submit(group: list[LabelledFile]) -> list[Future[LocatedImage | str]]:
            return [pool.submit(_locate_file, pipeline, file.path, detect) for file in group]

        pending = submit(groups[0]) if groups else []
        for index, group in enumerate(groups):
            current = pending
            # Queue the next group before waiting, so decoding overlaps the models' work.
            pending = submit(groups[index + 1]) if index + 1 < len(groups) else []
            yield group, [future.result() for future in current]


def _locate_file(pipeline: Pipeline, path: Path, detect: DetectMode) -> LocatedImage | str:
    """The image's located faces, or why it could not be read or decoded."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"cannot read: {error.strerror or error}"
    try:
        return pipeline.locate(data, detect)
    except InputError as error:
        return error.detail


def _face_area(face: Face) -> int:
    return face.box.width * face.box.height


def _labels_and_estimates(
    measured: list[tuple[LabelledFile, Face]],
) -> tuple[Labels, Estimates]:
    files = [file for file, _ in measured]
    faces = [face for _, face in measured]
    labels = Labels(
        gender=np.array([-1 if f.gender is None else f.gender for f in files], dtype=np.int64),
        age=np.array([np.nan if f.age is None else f.age for f in files], dtype=np.float64),
        race=np.array([-1 if f.race is None else f.race for f in files], dtype=np.int64),
    )
    estimates = Estimates(
        gender=np.array([GENDER_LABELS.index(face.gender.label) for face in faces], np.int64),
        bucket=np.array([AGE_BUCKET_LABELS.index(face.age.bucket) for face in faces], np.int64),
        age_years=np.array([face.age.years for face in faces], dtype=np.float64),
        age_interval=np.array(
            [(face.age.interval.low, face.age.interval.high) for face in faces], dtype=np.float64
        ).reshape(-1, 2),
    )
    return labels, estimates


def _age_checks(measured: list[tuple[LabelledFile, Face]]) -> list[dict[str, Any]]:
    """age_checks.age_check_figures for each threshold of the faces' `age.over`, over the faces
    of known age, by true-age band and by race."""
    known = [(file, face) for file, face in measured if file.age is not None]
    if not known:
        return []
    ages = np.array([file.age for file, _ in known], dtype=np.float64)
    races = np.array([-1 if file.race is None else file.race for file, _ in known])
    groups = {f"age {band}": mask for band, mask in age_bands(ages, AGE_BANDS).items()}
    groups |= {f"race {name}": races == index for index, name in enumerate(RACE_LABELS)}
    thresholds = [int(key) for key in known[0][1].age.over]
    return [
        age_check_figures(
            np.array([face.age.over[str(threshold)] for _, face in known]),
            ages,
            threshold,
            groups,
        )
        for threshold in thresholds
    ]


# ----------------------------------------------------------------------------- text report


def format_report(report: dict[str, Any]) -> str:
    """The report as plain text: summary, bucket confusion matrix, per-group table, errors."""
    seconds = report["seconds"]
    images = report["n"] + report["no_face"] + len(report["errors"])
    models = ", ".join(f"{model['name']} {model['version']}" for model in report["models"])
    lines = [
        f"evaluated {images} images in {seconds:.1f} s "
        f"({1000 * seconds / max(images, 1):.1f} ms per image), detect={report['detect']}",
        f"models: {models}",
        f"faces measured (n): {report['n']}   no face: {report['no_face']}   "
        f"errors: {len(report['errors'])}",
        "",
        f"  gender accuracy        {_figure(report['gender_accuracy'])}",
        f"  age bucket accuracy    {_figure(report['age_bucket_accuracy'])}",
        f"  age MAE (years)        {_figure(report['age_mae'], 2)}",
        f"  age interval coverage  {_figure(report['age_interval_coverage'])}",
    ]
    confusion = report["age_bucket_confusion"]
    if confusion is not None:
        labels = report["bucket_labels"]
        lines += ["", "age bucket confusion (rows: true bucket, columns: predicted bucket)"]
        lines.append(f"  {'':>8}" + "".join(f"{label:>9}" for label in labels))
        for label, row in zip(labels, confusion, strict=True):
            lines.append(f"  {label:>8}" + "".join(f"{count:>9}" for count in row))
    if report["groups"]:
        lines += [
            "",
            f"  {'group':<22}{'n':>7}{'gender acc':>12}{'bucket acc':>12}"
            f"{'age MAE':>9}{'coverage':>10}",
        ]
        for grouping, groups in report["groups"].items():
            for name, figures in groups.items():
                lines.append(
                    f"  {grouping + '=' + name:<22}{figures['n']:>7}"
                    f"{_figure(figures['gender_accuracy']):>12}"
                    f"{_figure(figures['age_bucket_accuracy']):>12}"
                    f"{_figure(figures['age_mae'], 2):>9}"
                    f"{_figure(figures['age_interval_coverage']):>10}"
                )
    if report.get("age_checks"):
        lines += ["", *_age_check_lines(report["age_checks"])]
    if report["errors"]:
        shown = report["errors"][:10]
        lines += ["", "errors:"] + [f"  {error['file']}: {error['error']}" for error in shown]
        if len(report["errors"]) > len(shown):
            lines.append(f"  ... and {len(report['errors']) - len(shown)} more (--json lists all)")
    return "\n".join(lines)


def _age_check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """The age checks as a table: one row per threshold, then the groups' rates per threshold."""
    lines = [
        "age checks, P(age >= T) (minors: under T; passed: P >= 0.5; challenge: the smallest p "
        "that passes at most 1% of minors, 95% bootstrap intervals)",
        f"  {'T':>3}{'under':>7}{'over':>7}{'minors passed':>15}{'adults refused':>16}"
        f"{'ECE':>8}{'Brier':>8}  {'challenge p':<24}{'adults refused at it':<22}",
    ]
    for check in checks:
        challenge = check["challenge"]
        p_low, p_high = challenge["p_interval"]
        r_low, r_high = challenge["adults_refused_interval"]
        p = f"{challenge['p']:.4f} [{p_low:.4f}, {p_high:.4f}]"
        refused = f"{challenge['adults_refused']:.4f} [{r_low:.4f}, {r_high:.4f}]"
        lines.append(
            f"  {check['threshold']:>3}{check['n_under']:>7}{check['n_over']:>7}"
            f"{_figure(check['minors_passed']):>15}{_figure(check['adults_refused']):>16}"
            f"{check['ece']:>8.4f}{check['brier']:>8.4f}  {p:<24}{refused:<22}"
        )
    lines += ["", "  minors passed / adults refused at p = 0.5, by group"]
    lines.append(f"  {'group':<18}" + "".join(f"{'T=' + str(c['threshold']):>14}" for c in checks))
    for group in checks[0]["groups"]:
        cells = []
        for check in checks:
            rates = check["groups"].get(group)
            if rates is None:
                cells.append(f"{'':>14}")
                continue
            cells.append(
                f"{_short(rates['minors_passed']):>7}/{_short(rates['adults_refused']):<6}"
            )
        lines.append(f"  {group:<18}" + "".join(cells))
    return lines


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _figure(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
