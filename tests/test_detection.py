"""The MTCNN face detector, alignment and detect=auto in the pipeline, on real faces.

The face is skimage's astronaut (Eileen Collins, public domain; shipped inside scikit-image, so no
network and no ../shared); group photos are made by pasting that face at several sizes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from tests.astronaut import (
    ASTRONAUT_FACE,
    GROUP_LAYOUT,
    GROUP_SIZE,
    group_photo,
    head,
    iou,
    jpeg,
)

from facedemo.alignment import CHIP_SIZE, align_face, similarity_transform, warp_chip
from facedemo.config import Settings
from facedemo.detect_mode import DEFAULT_DETECT_MODE, DetectMode
from facedemo.imaging import decode_image, resize_rgb
from facedemo.mtcnn_detector import TEMPLATE
from facedemo.pipeline import Pipeline

if TYPE_CHECKING:
    from facedemo.detection import Detection
    from facedemo.mtcnn_detector import MtcnnDetector
    from facedemo.registry import Registry

skimage_data = pytest.importorskip("skimage.data")

EXIF_ORIENTATION_TAG = 0x0112


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    from facedemo.mtcnn_detector import MtcnnDetector

    return MtcnnDetector.load()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())


def eye_angle_degrees(landmarks: np.ndarray) -> float:
    (left_x, left_y), (right_x, right_y) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(right_y - left_y, right_x - left_x))


def boxes_of(detections: list[Detection]) -> list[tuple[float, ...]]:
    return [detection.box for detection in detections]


# ----------------------------------------------------------------------------- detector


def test_astronaut_has_one_face_with_its_landmarks(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    [face] = detector.detect(astronaut)

    assert iou(face.box, ASTRONAUT_FACE) > 0.7
    assert face.confidence >= 0.95
    x1, y1, x2, y2 = face.box
    assert face.landmarks.shape == (5, 2)
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert mouth_left[0] < mouth_right[0]


def test_group_photo_gives_every_face_largest_first_inside_the_image(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    photo, expected = group_photo(astronaut)

    faces = detector.detect(photo)

    assert len(faces) == len(GROUP_LAYOUT)
    height, width = GROUP_SIZE
    for face, where in zip(faces, expected, strict=True):  # the layout is largest first too
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        assert iou(face.box, where) > 0.6
    areas = [face.area for face in faces]
    assert areas == sorted(areas, reverse=True)


def test_boxes_come_back_in_the_pixels_of_a_large_image(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    large = resize_rgb(astronaut, (1300, 1300))  # shrunk to 640 px inside the detector

    [face] = detector.detect(large)

    scaled = tuple(value * 1300 / 512 for value in ASTRONAUT_FACE)
    assert iou(face.box, scaled) > 0.7
    assert face.landmarks[:, 0].max() < 1300 and face.landmarks[:, 1].max() < 1300


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8),
        np.full((240, 320, 3), (40, 160, 90), np.uint8),
        np.full((5, 7, 3), 200, np.uint8),  # smaller than P-Net's window
    ],
    ids=["noise", "flat-colour", "tiny"],
)
def test_an_image_without_a_face_gives_no_detections(
    detector: MtcnnDetector, image: np.ndarray
) -> None:
    assert detector.detect(image) == []


def test_confidence_floor_drops_weaker_faces(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    [face] = detector.detect(astronaut)

    stricter = detector.configured(confidence=min(1.0, face.confidence + 1e-4))
    looser = detector.configured(confidence=face.confidence - 1e-4)

    assert stricter.detect(astronaut) == []
    assert [found.box for found in looser.detect(astronaut)] == [face.box]


def test_face_cap_keeps_the_largest_faces(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    photo, _ = group_photo(astronaut)
    every_face = detector.detect(photo)

    capped = detector.configured(max_faces=2).detect(photo)

    assert boxes_of(capped) == boxes_of(every_face)[:2]


def test_minimum_face_size_skips_smaller_faces(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    photo, expected = group_photo(astronaut)

    # In the 640 px working image the boxes are about 79, 56 and 33 px wide (102, 71 and 43
    # high); MTCNN still finds faces somewhat below its minimum size, so 90 px drops only one.
    faces = detector.configured(min_face_size=90).detect(photo)

    assert len(faces) == 2
    for face, where in zip(faces, expected[:2], strict=True):
        assert iou(face.box, where) > 0.6


# A crop of the astronaut's face tighter than its box: the face fills it edge to edge.
TIGHT_FACE = (slice(72, 162), slice(192, 257))  # rows, columns of the 512x512 image


def test_a_face_that_fills_the_image_is_found_by_looking_again_with_a_border(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    tight = np.ascontiguousarray(astronaut[TIGHT_FACE])
    [in_full_image] = detector.detect(astronaut)

    assert detector.configured(retry_border=0).detect(tight) == []
    [face] = detector.detect(tight)

    height, width = tight.shape[:2]
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert face.confidence >= 0.95
    # The same landmarks as in the whole photo, in the crop's pixels.
    offset = np.array([TIGHT_FACE[1].start, TIGHT_FACE[0].start])
    assert np.abs(face.landmarks - (in_full_image.landmarks - offset)).max() < 5


def test_the_bordered_look_works_in_the_pixels_of_a_large_image(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    tight = np.ascontiguousarray(astronaut[TIGHT_FACE])
    [face] = detector.detect(tight)
    scale = 6
    large = resize_rgb(tight, (tight.shape[0] * scale, tight.shape[1] * scale))
    shrinking = detector.configured(max_side=256)  # both looks work on a shrunk copy

    assert shrinking.configured(retry_border=0).detect(large) == []
    [large_face] = shrinking.detect(large)

    assert iou(large_face.box, tuple(value * scale for value in face.box)) > 0.8
    assert np.abs(large_face.landmarks - face.landmarks * scale).max() < 3 * scale


@pytest.mark.parametrize("retry_border", [-0.1, 1.5])
def test_the_retry_border_must_be_a_fraction(detector: MtcnnDetector, retry_border: float) -> None:
    with pytest.raises(ValueError, match="retry_border"):
        detector.configured(retry_border=retry_border)


def test_detection_is_the_same_from_several_threads(
    detector: MtcnnDetector, astronaut: np.ndarray
) -> None:
    photo, _ = group_photo(astronaut)
    images = [astronaut, photo] * 3
    expected = [boxes_of(detector.detect(image)) for image in images[:2]] * 3

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(detector.detect, images))

    assert [boxes_of(result) for result in results] == expected


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((20, 20, 3), np.float32),
        np.zeros((20, 20), np.uint8),
        np.zeros((20, 20, 4), np.uint8),
    ],
    ids=["float", "grey", "rgba"],
)
def test_detect_refuses_anything_but_an_rgb_uint8_array(
    detector: MtcnnDetector, image: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="image must"):
        detector.detect(image)


def test_pyramid_starts_at_the_minimum_face_and_stops_at_the_window() -> None:
    from facedemo.mtcnn_detector import PNET_WINDOW, PYRAMID_FACTOR, pyramid_scales

    for min_side, min_face_size in [(640, 20), (480, 37), (100, 80), (200, 12)]:
        scales = pyramid_scales(min_side, min_face_size)
        assert scales[0] == pytest.approx(PNET_WINDOW / min_face_size)
        assert min_side * scales[-1] >= PNET_WINDOW
        assert min_side * scales[-1] * PYRAMID_FACTOR < PNET_WINDOW
    assert pyramid_scales(30, 40) == []


@pytest.mark.parametrize("largest_slope", [1.0, 0.3, -0.2])
def test_a_prelu_computed_as_a_maximum_is_keras_bit_for_bit(largest_slope: float) -> None:
    import keras

    from facedemo.mtcnn_detector import _PReLUAsMaximum

    inputs = np.random.default_rng(0).normal(0.0, 3.0, (2, 9, 7, 16)).astype(np.float32)
    inputs[0, 0, 0] = 0.0
    layer = keras.layers.PReLU(shared_axes=[1, 2])
    layer.build(inputs.shape)
    slopes = np.random.default_rng(1).uniform(-0.7, largest_slope, (1, 1, 16))
    slopes[..., 0] = largest_slope
    layer.set_weights([slopes.astype(np.float32)])

    assert _PReLUAsMaximum.fits(layer)
    np.testing.assert_array_equal(
        np.asarray(_PReLUAsMaximum(layer)(inputs)), np.asarray(layer(inputs))
    )
    layer.set_weights([np.full((1, 1, 16), 1.01, np.float32)])
    assert not _PReLUAsMaximum.fits(layer)  # above 1 the maximum is another function


def test_the_networks_keep_keras_prelus_only_where_a_slope_exceeds_one() -> None:
    import keras
    from mtcnn.network.pnet import PNet

    from facedemo.mtcnn_detector import _network, _PReLUAsMaximum

    network = _network(PNet, "pnet.lz4")
    assert isinstance(network.prelu1, keras.layers.PReLU)  # one slope is 1.012
    assert isinstance(network.prelu2, _PReLUAsMaximum)
    assert isinstance(network.prelu3, _PReLUAsMaximum)


def test_non_maximum_suppression_keeps_the_best_of_each_cluster() -> None:
    from facedemo.detection import non_maximum_suppression

    boxes = np.array(
        [
            [0, 0, 10, 10, 0.8],
            [1, 1, 11, 11, 0.9],  # overlaps the first with IoU 0.68
            [50, 50, 60, 60, 0.7],
            [52, 52, 56, 56, 0.95],  # inside the third: small IoU, but all of it overlaps
        ]
    )

    assert non_maximum_suppression(boxes, 0.5).tolist() == [3, 1, 2]
    assert non_maximum_suppression(boxes, 0.5, method="min").tolist() == [3, 1]


# ----------------------------------------------------------------------------- alignment


def test_similarity_transform_recovers_a_known_transform() -> None:
    angle, scale, shift = math.radians(25), 1.7, np.array([30.0, -12.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    source = TEMPLATE * CHIP_SIZE
    target = source @ (scale * rotation).T + shift

    matrix = similarity_transform(source, target)

    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_the_template_landmarks_give_back_the_chip(astronaut: np.ndarray) -> None:
    chip = resize_rgb(np.ascontiguousarray(head(astronaut)), (CHIP_SIZE, CHIP_SIZE))
    landmarks = TEMPLATE * CHIP_SIZE

    aligned = align_face(chip, landmarks, TEMPLATE, (CHIP_SIZE, CHIP_SIZE))
    small = align_face(chip, landmarks, TEMPLATE, (64, 64))

    assert np.abs(aligned.astype(float) - chip).mean() < 1.0
    assert np.abs(small.astype(float) - resize_rgb(chip, (64, 64))).mean() < 1.0


def test_a_large_face_is_shrunk_without_aliasing(astronaut: np.ndarray) -> None:
    chip = resize_rgb(np.ascontiguousarray(head(astronaut)), (CHIP_SIZE, CHIP_SIZE))
    large = resize_rgb(chip, (4 * CHIP_SIZE, 4 * CHIP_SIZE))
    # Landmarks at the same places of the 4x image (pixel centres scale about -0.5).
    landmarks = (TEMPLATE * CHIP_SIZE + 0.5) * 4 - 0.5

    aligned = align_face(large, landmarks, TEMPLATE, (64, 64))

    assert np.abs(aligned.astype(float) - resize_rgb(chip, (64, 64))).mean() < 2.0


def test_warp_outside_the_image_repeats_its_edge_pixels() -> None:
    image = np.full((50, 50, 3), 50, np.uint8)
    image[:, 0] = (100 + 2 * np.arange(50))[:, None]  # the left edge: a different value per row
    shifted = np.array([[1.0, 0.0, -25.0], [0.0, 1.0, 0.0]])  # chip x maps to image x - 25

    chip = warp_chip(image, shifted, 50).astype(int)

    assert np.array_equal(chip[:, :20], np.broadcast_to(image[:, :1], (50, 20, 3)))
    assert np.all(chip[:, 30:] == 50)


def test_warp_of_a_region_wholly_outside_the_image_is_black() -> None:
    image = np.full((50, 50, 3), 255, np.uint8)
    far_away = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 500.0]])

    assert warp_chip(image, far_away, 20).max() == 0


def test_a_tilted_face_comes_out_upright(detector: MtcnnDetector, astronaut: np.ndarray) -> None:
    canvas = Image.new("RGB", (700, 700), (128, 128, 128))
    canvas.paste(Image.fromarray(np.ascontiguousarray(head(astronaut))), (250, 240))
    tilted = np.asarray(canvas.rotate(30, resample=Image.Resampling.BILINEAR))
    [face] = detector.detect(tilted)
    assert abs(eye_angle_degrees(face.landmarks)) > 20

    chip = align_face(tilted, face.landmarks, TEMPLATE, (CHIP_SIZE, CHIP_SIZE))

    [upright] = detector.detect(chip)
    assert abs(eye_angle_degrees(upright.landmarks)) < 5
    assert np.abs(upright.landmarks / CHIP_SIZE - TEMPLATE).max() < 0.06


# ----------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_registry: Registry, tiny_models_dir: Path, detector: MtcnnDetector) -> Pipeline:
    return Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir), detector)


def test_auto_is_the_default_and_finds_the_astronaut(
    pipeline: Pipeline, tiny_registry: Registry, astronaut: np.ndarray
) -> None:
    data = jpeg(astronaut)

    result = pipeline.predict_image(data)

    assert DEFAULT_DETECT_MODE is DetectMode.AUTO
    [face] = result.faces
    box = (face.box.x, face.box.y, face.box.x + face.box.width, face.box.y + face.box.height)
    assert iou(box, ASTRONAUT_FACE) > 0.7
    assert face.detection_confidence is not None and face.detection_confidence >= 0.95
    assert face.landmarks is not None
    assert face.landmarks.left_eye.x < face.landmarks.right_eye.x
    assert face.landmarks.nose.y < face.landmarks.mouth_left.y
    # The models saw the aligned crop, not the box.
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
    crop = align_face(
        decode_image(data, max_pixels=10**7), landmarks, TEMPLATE, tiny_registry.input_size
    )
    expected = tiny_registry.predict(crop[None])
    assert face.age.years == pytest.approx(float(expected.age_years[0]), abs=0.2)


def test_auto_on_a_group_photo_returns_each_face_by_size(
    pipeline: Pipeline, astronaut: np.ndarray
) -> None:
    photo, expected = group_photo(astronaut)

    faces = pipeline.predict_image(jpeg(photo), DetectMode.AUTO).faces

    assert len(faces) == len(GROUP_LAYOUT)
    for face, where in zip(faces, expected, strict=True):
        box = (face.box.x, face.box.y, face.box.x + face.box.width, face.box.y + face.box.height)
        assert box[0] >= 0 and box[1] >= 0 and box[2] <= GROUP_SIZE[1] and box[3] <= GROUP_SIZE[0]
        assert iou(box, where) > 0.6


def test_auto_on_a_large_jpeg_reports_whole_image_pixels(
    pipeline: Pipeline, astronaut: np.ndarray
) -> None:
    # 1536 px: decoded at half scale for the 640-px detector, reported at full scale.
    large = np.asarray(Image.fromarray(astronaut).resize((1536, 1536), Image.Resampling.BICUBIC))

    result = pipeline.predict_image(jpeg(large), DetectMode.AUTO)
    reference = pipeline.predict_image(jpeg(astronaut), DetectMode.AUTO)

    assert (result.image.width, result.image.height) == (1536, 1536)
    [face], [small] = result.faces, reference.faces
    box = (face.box.x, face.box.y, face.box.x + face.box.width, face.box.y + face.box.height)
    assert iou(box, tuple(3 * value for value in ASTRONAUT_FACE)) > 0.7
    assert face.landmarks is not None and small.landmarks is not None
    assert abs(face.landmarks.nose.x - 3 * small.landmarks.nose.x) <= 9
    assert abs(face.landmarks.nose.y - 3 * small.landmarks.nose.y) <= 9


def test_auto_without_a_face_is_an_empty_list(pipeline: Pipeline) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)

    result = pipeline.predict_image(jpeg(noise), DetectMode.AUTO)

    assert result.faces == []
    assert (result.image.width, result.image.height) == (300, 200)


def test_exif_rotated_photo_gives_boxes_in_the_displayed_orientation(
    pipeline: Pipeline, astronaut: np.ndarray
) -> None:
    displayed = np.ascontiguousarray(astronaut[:, 60:460])  # 512 high, 400 wide
    stored = np.ascontiguousarray(np.rot90(displayed, k=1))  # orientation 6 turns it back
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6

    rotated = pipeline.predict_image(jpeg(stored, exif=exif.tobytes()), DetectMode.AUTO)
    upright = pipeline.predict_image(jpeg(displayed), DetectMode.AUTO)

    assert (rotated.image.width, rotated.image.height) == (400, 512)
    [face], [reference] = rotated.faces, upright.faces
    for got, want in [
        (face.box.x, reference.box.x),
        (face.box.y, reference.box.y),
        (face.box.width, reference.box.width),
        (face.box.height, reference.box.height),
    ]:
        assert abs(got - want) <= 4
    assert face.landmarks is not None and reference.landmarks is not None
    assert abs(face.landmarks.nose.x - reference.landmarks.nose.x) <= 3
    assert abs(face.landmarks.nose.y - reference.landmarks.nose.y) <= 3


def test_skip_still_takes_the_whole_image_as_one_face(
    pipeline: Pipeline, astronaut: np.ndarray
) -> None:
    result = pipeline.predict_image(jpeg(astronaut), DetectMode.SKIP)

    [face] = result.faces
    assert (face.box.x, face.box.y, face.box.width, face.box.height) == (0, 0, 512, 512)
    assert face.detection_confidence is None and face.landmarks is None


def test_auto_needs_a_detector(
    tiny_registry: Registry, tiny_models_dir: Path, astronaut: np.ndarray
) -> None:
    without = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir))

    with pytest.raises(ValueError, match="detector"):
        without.predict_image(jpeg(astronaut), DetectMode.AUTO)
