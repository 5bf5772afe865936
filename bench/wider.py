"""Face detection on real photos: detectors scored on a folder in the wider-dev layout, and the
served photos/s of each FACEDEMO_DETECTOR on its photos.

    .venv/bin/pip install -e ".[bench]"       # and, for the YuNet candidate: pip install yuface
    .venv/bin/python -m bench.wider ../shared/data/wider-dev [--serve-seconds 20] [--write-readme]

The folder holds `labels.json` (a list of {"path", "boxes", "attrs", "ignore"}, boxes as x, y,
width, height) and the photos it names (../shared/data/README.md). Each photo is decoded as the
service decodes it (`imaging.decode_image`) and given to each detector whole.

Scoring, as the data's README says: a detection matches a face one-to-one at IoU >= 0.5, best
overlaps first. A face's size is the long side of its box; faces under 20 px and faces marked
invalid are in `ignore`: they count neither as found nor as missed, and a detection on one (IoU
>= 0.3 with it: the boxes of faces this small are a few pixels off) is not a false positive
either. Every other unmatched detection is. Recall is by size band and, for faces of >= 20 px,
by WIDER FACE's attributes. The time is the mean of `detect` over the photos, one thread, after
a warm-up call.

Served photos/s: for each FACEDEMO_DETECTOR in turn (`--rounds` times, taking turns) a
`facedemo serve` with the bundled models gets every photo of the folder, as its JPEG bytes, in a
POST /predict?detect=auto (the whole request: upload, decode, detection, alignment, models),
from `--concurrency` clients for `--serve-seconds`, after a warm-up. Loopback only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench.load import multipart
from bench.readme import markdown_table, write_section
from bench.soak import free_port
from bench.throughput import facedemo_environment, measure, server

from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS, Settings
from facedemo.detector_names import DETECTOR_NAMES
from facedemo.imaging import decode_image

SECTION = "## Face detection on real photos"
COMMAND = "python -m bench.wider ../shared/data/wider-dev --write-readme"
MATCH_IOU = 0.5
IGNORED_IOU = 0.3
BANDS = (("20-40 px", 20, 40), (">= 40 px", 40, None), (">= 20 px", 20, None))
# WIDER FACE's attributes, in the order of `attrs`: [blur, expression, illumination, occlusion,
# pose]; (label, index, value).
ATTRIBUTES = (
    ("blur: none", 0, 0),
    ("blur: some", 0, 1),
    ("blur: heavy", 0, 2),
    ("expression: exaggerated", 1, 1),
    ("illumination: extreme", 2, 1),
    ("occlusion: none", 3, 0),
    ("occlusion: partial", 3, 1),
    ("occlusion: heavy", 3, 2),
    ("pose: typical", 4, 0),
    ("pose: atypical", 4, 1),
)

# The columns of a detector's score in a table, as `Score.cells` fills them.
SCORE_COLUMNS = [
    "recall >= 40 px",
    "recall 20-40 px",
    "recall >= 20 px",
    "precision",
    "false positives a photo",
    "ms a photo",
]

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Scored = tuple[float, float, float, float, float]  # x1, y1, x2, y2, confidence
DetectFunction = Callable[[np.ndarray], list[Scored]]


@dataclass(frozen=True)
class Photo:
    """A labelled photo: its JPEG bytes, its pixels and its faces."""

    path: str
    data: bytes
    pixels: np.ndarray
    faces: list[Box]
    attributes: list[list[int]]
    ignored: list[Box]


@dataclass(frozen=True)
class Candidate:
    """A detector to score, and what the table says of it."""

    name: str
    package: str  # package and version
    license: str  # of the code and of the weights
    runtime: str
    input_size: str
    thresholds: str
    detect: DetectFunction


@dataclass
class Score:
    """A detector's counts over the photos."""

    found: dict[str, list[int]] = field(default_factory=dict)  # label -> [found, faces]
    true_positives: int = 0
    false_positives: int = 0
    photos: int = 0
    seconds: float = 0.0

    def count(self, label: str, hit: bool) -> None:
        """One face of the group `label`, found or not."""
        tally = self.found.setdefault(label, [0, 0])
        tally[0] += hit
        tally[1] += 1

    def recall(self, label: str) -> str:
        """Recall of `label`'s faces, e.g. "0.910"; "-" without any."""
        found, faces = self.found.get(label, [0, 0])
        return f"{found / faces:.3f}" if faces else "-"

    @property
    def precision(self) -> float:
        """Matched detections among all that count."""
        counted = self.true_positives + self.false_positives
        return self.true_positives / counted if counted else float("nan")

    def cells(self) -> list[str]:
        """The table cells under SCORE_COLUMNS."""
        return [
            self.recall(">= 40 px"),
            self.recall("20-40 px"),
            self.recall(">= 20 px"),
            f"{self.precision:.3f}",
            f"{self.false_positives / self.photos:.2f}",
            f"{1000 * self.seconds / self.photos:.0f}",
        ]


def load_photos(folder: Path) -> list[Photo]:
    """The labelled photos of a folder in the wider-dev layout."""
    labels = json.loads((folder / "labels.json").read_text())
    photos = []
    for entry in labels:
        data = (folder / entry["path"]).read_bytes()
        photos.append(
            Photo(
                path=entry["path"],
                data=data,
                pixels=decode_image(data, max_pixels=DEFAULT_MAX_IMAGE_PIXELS),
                faces=[_corners(box) for box in entry["boxes"]],
                attributes=entry["attrs"],
                ignored=[_corners(box) for box in entry["ignore"]],
            )
        )
    return photos


def iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = _area(first) + _area(second) - intersection
    return intersection / union


def match(faces: list[Box], detections: list[Box]) -> dict[int, int]:
    """One-to-one matches (detection index -> face index) at IoU >= 0.5, best overlaps first."""
    pairs = sorted(
        (
            (overlap, detection, face)
            for detection, box in enumerate(detections)
            for face, truth in enumerate(faces)
            if (overlap := iou(box, truth)) >= MATCH_IOU
        ),
        reverse=True,
    )
    matched: dict[int, int] = {}
    for _, detection, face in pairs:
        if detection not in matched and face not in matched.values():
            matched[detection] = face
    return matched


def score(photos: list[Photo], detections: list[list[Scored]]) -> Score:
    """Recall by band and attribute, and precision, of `detections` (one list per photo)."""
    result = Score(photos=len(photos))
    for photo, found in zip(photos, detections, strict=True):
        boxes = [detection[:4] for detection in found]
        matched = match(photo.faces, boxes)
        hit_faces = set(matched.values())
        for index, (face, attributes) in enumerate(zip(photo.faces, photo.attributes, strict=True)):
            side = max(face[2] - face[0], face[3] - face[1])
            hit = index in hit_faces
            for label, low, high in BANDS:
                if side >= low and (high is None or side < high):
                    result.count(label, hit)
            for label, position, value in ATTRIBUTES:
                if attributes[position] == value:
                    result.count(label, hit)
        for index, box in enumerate(boxes):
            if index in matched:
                result.true_positives += 1
            elif not any(iou(box, ignored) >= IGNORED_IOU for ignored in photo.ignored):
                result.false_positives += 1
    return result


def run_detector(candidate: Candidate, photos: list[Photo]) -> Score:
    """Score one candidate on the photos, timing its detect calls."""
    candidate.detect(photos[0].pixels)  # warm-up
    found = []
    seconds = 0.0
    for photo in photos:
        started = time.perf_counter()
        found.append(candidate.detect(photo.pixels))
        seconds += time.perf_counter() - started
    result = score(photos, found)
    result.seconds = seconds
    return result


# ----------------------------------------------------------------------------- candidates


def served_candidate(name: str, label: str, **settings: object) -> Candidate:
    """A FACEDEMO_DETECTOR detector with the given detector_* settings (the rest default)."""
    from facedemo.detection import load_detector

    detector = load_detector(Settings(detector=name, **settings), "CPU:0")  # type: ignore[arg-type]
    info = detector.info()
    floors = ", ".join(
        f">= {floor.min_side:g} px: {floor.confidence:g}"
        if floor.min_side
        else f"{floor.confidence:g}"
        for floor in info.confidence
    )
    return Candidate(
        name=label,
        package=f"{info.package} {info.version}",
        license=f"{info.license} (code and weights)",
        runtime=f"{info.runtime}, 1 thread",
        input_size=f"longest side {info.max_side} px",
        thresholds=f"{floors}; min face {info.min_face_size} px",
        detect=lambda pixels: [(*found.box, found.confidence) for found in detector.detect(pixels)],
    )


def yunet_candidate(confidence: float) -> Candidate | None:
    """libfacedetection's YuNet through the yuface wheel (SSE build), if it is installed."""
    if importlib.util.find_spec("yuface") is None:
        return None
    import warnings
    from importlib.metadata import version

    import yuface

    def detect(pixels: np.ndarray) -> list[Scored]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too large" above 960 px: measured as it is
            scores, boxes, _ = yuface.detect(np.ascontiguousarray(pixels[:, :, ::-1]), confidence)
        return [
            (float(x), float(y), float(x + width), float(y + height), float(score) / 100)
            for score, (x, y, width, height) in zip(scores, boxes.astype(float), strict=True)
        ]

    return Candidate(
        name=f"YuNet (yuface), confidence {confidence:g}",
        package=f"yuface {version('yuface')}",
        license="BSD-3 (libfacedetection, weights compiled in)",
        runtime="libfacedetection C++ (SSE build), OpenMP threads: all cores",
        input_size="the photo as it is",
        thresholds=f"{confidence:g}",
        detect=detect,
    )


def candidates() -> list[Candidate]:
    """Every detector the table compares: the served ones, other settings, and YuNet."""
    from facedemo.devices import select_device

    select_device("cpu", op_threads=1)  # one thread a TensorFlow op, as served
    found = [
        served_candidate("retinaface", "RetinaFace (`retinaface`, served default)"),
        served_candidate("retinaface", "RetinaFace, one floor of 0.8", detector_confidence=0.8),
        served_candidate("retinaface", "RetinaFace at 640 px", detector_max_side=640),
        served_candidate("mtcnn", "MTCNN (`mtcnn`, served before)"),
        served_candidate("mtcnn", "MTCNN at 1,024 px", detector_max_side=1024),
    ]
    for confidence in (0.7, 0.8, 0.9):
        yunet = yunet_candidate(confidence)
        if yunet is not None:
            found.append(yunet)
    return found


# ----------------------------------------------------------------------------- serving


def served_photos_per_second(
    photos: list[Photo], *, seconds: float, concurrency: int, rounds: int, scratch: Path
) -> dict[str, list[float]]:
    """Photos/s of POST /predict?detect=auto for each FACEDEMO_DETECTOR, `rounds` each, in turn."""
    from facedemo.config import DEFAULT_MODELS_DIR

    uploads = [multipart("file", [photo.data]) for photo in photos]
    rates: dict[str, list[float]] = {name: [] for name in DETECTOR_NAMES}
    for round_number in range(rounds):
        order = DETECTOR_NAMES if round_number % 2 == 0 else DETECTOR_NAMES[::-1]
        for name in order:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)]
            environment = facedemo_environment(DEFAULT_MODELS_DIR, 32) | {"FACEDEMO_DETECTOR": name}
            print(f"served: {name}, round {round_number + 1} ...", flush=True)
            with server(command, environment, f"{base_url}/readyz", scratch / "servers.log"):
                result, _ = measure(
                    base_url,
                    "/predict",
                    uploads,
                    concurrency=concurrency,
                    requests=100_000,
                    seconds=seconds,
                    params={"detect": "auto"},
                    with_metrics=False,
                )
            if result.statuses.get(200, 0) != result.requests or result.transport_errors:
                raise RuntimeError(f"{name}: answers {dict(result.statuses)}, see {scratch}")
            rates[name].append(result.images_per_second)
    return rates


# ----------------------------------------------------------------------------- report


def format_report(
    photos: list[Photo],
    rows: list[tuple[Candidate, Score]],
    rates: dict[str, list[float]],
    concurrency: int,
) -> str:
    """The three tables: detectors, recall by attribute, served photos/s."""
    faces = {label: rows[0][1].found.get(label, [0, 0])[1] for label, _, _ in BANDS}
    lines = [
        f"{len(photos)} photos, {faces['>= 40 px']} faces of >= 40 px and "
        f"{faces['20-40 px']} of 20-40 px.",
        "",
    ]
    header = [
        "detector",
        "package",
        "licence",
        "runtime",
        "input",
        "confidence floors",
        *SCORE_COLUMNS,
    ]
    table = [
        [
            candidate.name,
            candidate.package,
            candidate.license,
            candidate.runtime,
            candidate.input_size,
            candidate.thresholds,
            *result.cells(),
        ]
        for candidate, result in rows
    ]
    lines += markdown_table(header, table, text_columns=6)
    lines += ["", "Recall of the faces of >= 20 px by WIDER FACE's attributes:", ""]
    attribute_rows = []
    for label, _, _ in ATTRIBUTES:
        count = rows[0][1].found.get(label, [0, 0])[1]
        attribute_rows.append([label, str(count)] + [result.recall(label) for _, result in rows])
    lines += markdown_table(
        ["attribute", "faces"] + [candidate.name for candidate, _ in rows],
        attribute_rows,
        text_columns=1,
    )
    if rates:
        lines += [
            "",
            f"Served `POST /predict?detect=auto`, photos/s at concurrency {concurrency}, each "
            "round a fresh `facedemo serve` per detector, taking turns:",
            "",
        ]
        baseline = statistics.mean(rates["mtcnn"])
        served = [
            [f"`FACEDEMO_DETECTOR={name}`"]
            + [f"{rate:.1f}" for rate in values]
            + [f"{statistics.mean(values):.1f}", f"{statistics.mean(values) / baseline:.2f}"]
            for name, values in rates.items()
        ]
        rounds = len(next(iter(rates.values())))
        lines += markdown_table(
            ["detector"] + [f"round {k + 1}" for k in range(rounds)] + ["mean", "against mtcnn"],
            served,
            text_columns=1,
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Score the detectors on the folder, time the served ones, print (and write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder in the wider-dev layout")
    parser.add_argument("--serve-seconds", type=float, default=20.0, help="0: no served run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    photos = load_photos(args.folder)
    rows = []
    for candidate in candidates():
        print(f"scoring {candidate.name} ...", flush=True)
        rows.append((candidate, run_detector(candidate, photos)))
    rates: dict[str, list[float]] = {}
    if args.serve_seconds > 0:
        with tempfile.TemporaryDirectory(prefix="bench-wider-") as scratch:
            rates = served_photos_per_second(
                photos,
                seconds=args.serve_seconds,
                concurrency=args.concurrency,
                rounds=args.rounds,
                scratch=Path(scratch),
            )
    report = format_report(photos, rows, rates, args.concurrency)
    print(report)
    if args.write_readme:
        intro = (
            f"`{COMMAND}` (bench/wider.py; its docstring says how photos are scored and timed). "
            "Real photos from WIDER FACE's validation set with the boxes people drew; the "
            "detectors' defaults were chosen on these photos, so held-back photos will score "
            "somewhat lower."
        )
        write_section(SECTION, intro, report)
    return 0


def _corners(box: list[float]) -> Box:
    x, y, width, height = box
    return (float(x), float(y), float(x + width), float(y + height))


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


if __name__ == "__main__":
    sys.exit(main())
