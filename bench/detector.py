"""Speed and agreement of our face detector against the stock `mtcnn.MTCNN().detect_faces`.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python -m bench.detector --utkface /path/to/UTKFace [--write-readme]

Photos: skimage's astronaut (one real face), a crop of her face tighter than its box (the face
fills the image: our detector finds it on its second look, with a border), a group photo made by
pasting her head at three sizes on grey, two skimage photos without a face (coffee, rocket: ours
looks twice at them, so they show what the second look costs) and, with --utkface, 2x2, 3x3 and
4x4 grids of UTKFace chips (synthetic group photos) and single chips (the chips are read where
they are). Each photo is also upscaled to 1024 and 2048 px on its longest side. Both detectors
get the same RGB arrays; our detector is loaded (and warmed up) first, the stock one runs one
untimed call first. Each time is the median of --repeats runs.

Agreement: a stock box is matched when one of our boxes overlaps it with IoU >= 0.5 (one-to-one,
best overlaps first). Stock keeps faces down to O-Net confidence 0.8, ours from 0.95, so the
headline counts stock boxes at 0.95 or more; beside it are all stock boxes against ours at
0.95, and against ours run (untimed) with stock's floor of 0.8, which compares the two
implementations at equal settings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from bench.readme import write_section

from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS
from facedemo.imaging import decode_image, resize_rgb

SECTION = "## Face detector"
COMMAND = "python -m bench.detector --utkface /path/to/UTKFace --write-readme"
SIDES = (1024, 2048)
IOU_MATCH = 0.5
OUR_CONFIDENCE = 0.95
STOCK_CONFIDENCE = 0.8

Box = tuple[float, float, float, float]  # x1, y1, x2, y2


@dataclass(frozen=True)
class Case:
    """One photo at one size."""

    name: str
    image: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """Both detectors' times and boxes on one case."""

    case: Case
    stock_seconds: float
    ours_seconds: float
    stock_boxes: list[tuple[Box, float]]  # with the stock confidence
    our_boxes: list[Box]  # at our confidence floor, 0.95
    our_boxes_at_stock_floor: list[Box]  # ours with stock's floor, 0.8 (untimed)

    def matched(self, floor: float) -> tuple[int, int]:
        """(stock boxes with confidence >= floor, how many of them one of ours matches)."""
        stock = [box for box, confidence in self.stock_boxes if confidence >= floor]
        return len(stock), len(match(stock, self.our_boxes))

    def matched_at_stock_floor(self) -> tuple[int, int]:
        """(all stock boxes, how many of them ours matches when run with stock's floor)."""
        stock = [box for box, _ in self.stock_boxes]
        return len(stock), len(match(stock, self.our_boxes_at_stock_floor))

    def ours_only(self) -> int:
        """Our boxes that match no stock box at all."""
        stock = [box for box, _ in self.stock_boxes]
        return len(self.our_boxes) - len(match(stock, self.our_boxes))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def match(reference: list[Box], found: list[Box]) -> list[tuple[int, int]]:
    """One-to-one pairs (reference index, found index) with IoU >= 0.5, best overlaps first."""
    pairs = sorted(
        (
            (iou(a, b), i, j)
            for i, a in enumerate(reference)
            for j, b in enumerate(found)
            if iou(a, b) >= IOU_MATCH
        ),
        reverse=True,
    )
    used_reference: set[int] = set()
    used_found: set[int] = set()
    matched = []
    for _, i, j in pairs:
        if i not in used_reference and j not in used_found:
            used_reference.add(i)
            used_found.add(j)
            matched.append((i, j))
    return matched


def grid(chips: list[np.ndarray], columns: int) -> np.ndarray:
    """Chips (all the same size) tiled `columns` wide: a synthetic group photo."""
    rows = [np.concatenate(chips[i : i + columns], axis=1) for i in range(0, len(chips), columns)]
    return np.concatenate(rows, axis=0)


def pasted_group(face: np.ndarray) -> np.ndarray:
    """A 1000x600 grey canvas with `face` pasted at three sizes."""
    canvas = np.full((600, 1000, 3), 128, np.uint8)
    for scale, left, top in ((1.5, 40, 60), (1.0, 420, 200), (0.6, 760, 300)):
        size = (round(face.shape[0] * scale), round(face.shape[1] * scale))
        canvas[top : top + size[0], left : left + size[1]] = resize_rgb(face, size)
    return canvas


def photos(utkface: Path | None, chips: int) -> list[Case]:
    """The photos at their own size."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut())
    found = [
        Case("astronaut", astronaut),
        Case("astronaut, tight crop", np.ascontiguousarray(astronaut[72:162, 192:257])),
        Case("astronaut pasted x3", pasted_group(np.ascontiguousarray(astronaut[20:230, 130:320]))),
        Case("coffee (no face)", np.ascontiguousarray(data.coffee())),
        Case("rocket (no face)", np.ascontiguousarray(data.rocket())),
    ]
    if utkface is not None:
        paths = sorted(path for path in utkface.iterdir() if path.suffix.lower() == ".jpg")
        wanted = 4 + 9 + 16 + chips
        step = max(1, len(paths) // wanted)
        images = [
            decode_image(path.read_bytes(), max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
            for path in paths[::step]
        ][:wanted]
        images = [resize_rgb(image, (200, 200)) for image in images]
        found.append(Case("UTKFace grid 2x2", grid(images[:4], 2)))
        found.append(Case("UTKFace grid 3x3", grid(images[4:13], 3)))
        found.append(Case("UTKFace grid 4x4", grid(images[13:29], 4)))
        found.extend(Case(f"UTKFace chip {i + 1}", image) for i, image in enumerate(images[29:]))
    return found


def sized(cases: list[Case]) -> list[Case]:
    """Each photo at its own size and upscaled to each of SIDES on its longest side."""
    result = []
    for case in cases:
        result.append(case)
        height, width = case.image.shape[:2]
        for side in SIDES:
            factor = side / max(height, width)
            size = (round(height * factor), round(width * factor))
            result.append(Case(case.name, resize_rgb(case.image, size)))
    return result


def timed(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last result."""
    seconds = []
    result: object = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def run(cases: list[Case], repeats: int) -> list[Outcome]:
    """Time both detectors on every case."""
    from mtcnn import MTCNN

    from facedemo.mtcnn_detector import MtcnnDetector

    ours = MtcnnDetector.load()
    ours_at_stock_floor = ours.configured(confidence=STOCK_CONFIDENCE)
    stock = MTCNN()
    stock.detect_faces(cases[0].image)
    outcomes = []
    for case in cases:
        ours_seconds, detections = timed(partial(ours.detect, case.image), repeats)
        stock_seconds, faces = timed(partial(stock.detect_faces, case.image), repeats)
        our_boxes = [detection.box for detection in detections]  # type: ignore[attr-defined]
        at_stock_floor = [detection.box for detection in ours_at_stock_floor.detect(case.image)]
        stock_boxes = [
            (
                (
                    float(face["box"][0]),
                    float(face["box"][1]),
                    float(face["box"][0] + face["box"][2]),
                    float(face["box"][1] + face["box"][3]),
                ),
                float(face["confidence"]),
            )
            for face in faces  # type: ignore[attr-defined]
        ]
        outcome = Outcome(case, stock_seconds, ours_seconds, stock_boxes, our_boxes, at_stock_floor)
        outcomes.append(outcome)
        print(row(outcome), file=sys.stderr, flush=True)
    return outcomes


def row(outcome: Outcome) -> str:
    """One markdown table row."""
    height, width = outcome.case.image.shape[:2]
    stock_95, matched_95 = outcome.matched(OUR_CONFIDENCE)
    stock_80, matched_80 = outcome.matched(0.0)
    stock_all, matched_same_floor = outcome.matched_at_stock_floor()
    return (
        f"| {outcome.case.name} | {width}x{height} | {outcome.stock_seconds * 1000:.0f} "
        f"| {outcome.ours_seconds * 1000:.0f} "
        f"| {outcome.stock_seconds / outcome.ours_seconds:.1f}x "
        f"| {matched_95}/{stock_95} | {matched_80}/{stock_80} "
        f"| {matched_same_floor}/{stock_all} | {outcome.ours_only()} |"
    )


def report(outcomes: list[Outcome]) -> str:
    """The markdown table and the summary lines."""
    lines = [
        "| photo | size | stock ms | ours ms | speed-up | stock boxes >= 0.95 matched "
        "| all stock boxes matched | all matched, ours at 0.8 | ours only |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(row(outcome) for outcome in outcomes),
    ]
    stock_total = sum(outcome.stock_seconds for outcome in outcomes)
    ours_total = sum(outcome.ours_seconds for outcome in outcomes)
    ratios = [outcome.stock_seconds / outcome.ours_seconds for outcome in outcomes]
    geometric = float(np.exp(np.mean(np.log(ratios))))
    stock_95 = sum(outcome.matched(OUR_CONFIDENCE)[0] for outcome in outcomes)
    matched_95 = sum(outcome.matched(OUR_CONFIDENCE)[1] for outcome in outcomes)
    stock_80 = sum(outcome.matched(0.0)[0] for outcome in outcomes)
    matched_80 = sum(outcome.matched(0.0)[1] for outcome in outcomes)
    matched_same_floor = sum(outcome.matched_at_stock_floor()[1] for outcome in outcomes)
    ours_only = sum(outcome.ours_only() for outcome in outcomes)
    lines += [
        "",
        f"- time over all {len(outcomes)} images: stock {stock_total:.1f} s, ours "
        f"{ours_total:.1f} s: **{stock_total / ours_total:.1f}x faster** (per-image speed-up: "
        f"geometric mean {geometric:.1f}x, lowest {min(ratios):.1f}x)",
        f"- agreement: **{matched_95}/{stock_95} = {100 * matched_95 / max(stock_95, 1):.1f}%** "
        f"of stock boxes with confidence >= 0.95 matched at IoU >= 0.5; all stock boxes "
        f"(>= 0.8): {matched_80}/{stock_80} = {100 * matched_80 / max(stock_80, 1):.1f}%; "
        f"all stock boxes by ours run with stock's 0.8 floor: {matched_same_floor}/{stock_80} = "
        f"{100 * matched_same_floor / max(stock_80, 1):.1f}%",
        f"- faces found by ours but by no stock box: {ours_only}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utkface", type=Path, help="folder of UTKFace chips (optional)")
    parser.add_argument("--chips", type=int, default=3, help="single UTKFace chips (default 3)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per image (median)")
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()[0]
    outcomes = run(sized(photos(args.utkface, args.chips)), args.repeats)
    text = f"{machine(load_before)}\n\n{report(outcomes)}"
    print(text)
    if args.write_readme:
        write_section(
            SECTION,
            "Our MTCNN (src/facedemo/mtcnn_detector.py) against stock "
            "`mtcnn.MTCNN().detect_faces` on the same RGB arrays (bench/detector.py; its "
            "docstring says how photos, times and matches are made). Times in milliseconds per "
            "image.",
            text,
        )
    return 0


def machine(load_before: float) -> str:
    """What the numbers were measured on."""
    import tensorflow as tf

    return (
        f"Command: `{COMMAND}`\n\n"
        f"Measured on {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, mtcnn 1.0.0; "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
        "(other work on the machine slows both detectors alike)."
    )


if __name__ == "__main__":
    sys.exit(main())
