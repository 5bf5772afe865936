"""The pipeline without HTTP: bytes in, per-face results out, over the tiny test registry."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from tests.images import encode, noise_image

from facedemo.config import Settings
from facedemo.detect_mode import DetectMode
from facedemo.errors import ImageDecodeError, ImageTooLarge
from facedemo.imaging import decode_image, resize_rgb
from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, GENDER_LABELS, REGRESSOR_NAME
from facedemo.pipeline import Pipeline, WorkStopped
from facedemo.schemas import PredictResponse

if TYPE_CHECKING:
    from facedemo.registry import Registry

EXIF_ORIENTATION_TAG = 0x0112
# These tests use noise images as face crops; detect=auto is tested in test_detection.py.
SKIP = DetectMode.SKIP


@pytest.fixture(scope="module")
def pipeline(tiny_registry: Registry, tiny_models_dir: Path) -> Pipeline:
    return Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir))


def test_skip_mode_predicts_the_whole_image_as_one_face(pipeline: Pipeline) -> None:
    result = pipeline.predict_image(encode(noise_image(30, 40, seed=1), "PNG"), DetectMode.SKIP)

    assert isinstance(result, PredictResponse)
    assert (result.image.width, result.image.height) == (40, 30)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert (face.box.x, face.box.y, face.box.width, face.box.height) == (0, 0, 40, 30)
    assert face.detection_confidence is None and face.landmarks is None
    assert list(face.age.bucket_probabilities) == list(AGE_BUCKET_LABELS)
    assert sum(face.age.bucket_probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert face.age.bucket == max(
        face.age.bucket_probabilities, key=face.age.bucket_probabilities.__getitem__
    )
    genders = face.gender.probabilities.model_dump()
    assert list(genders) == list(GENDER_LABELS)
    assert sum(genders.values()) == pytest.approx(1.0, abs=1e-3)
    assert face.gender.confidence == max(genders.values()) >= 0.5
    assert genders[face.gender.label] == face.gender.confidence
    assert face.age.interval.level == pytest.approx(0.8)
    assert 0.0 <= face.age.interval.low <= face.age.interval.high <= 100.0
    assert 0.0 <= face.age.years <= 100.0
    assert [(model.name, model.version) for model in result.models] == [
        (CLASSIFIER_NAME, "1.0.0"),
        (REGRESSOR_NAME, "1.0.0"),
    ]


def test_results_are_the_registry_rows_for_the_resized_image(
    pipeline: Pipeline, tiny_registry: Registry
) -> None:
    data = encode(noise_image(50, 70, seed=2), "PNG")
    expected = tiny_registry.predict(
        resize_rgb(decode_image(data, max_pixels=10**6), tiny_registry.input_size)[None]
    )

    face = pipeline.predict_image(data, DetectMode.SKIP).faces[0]

    assert list(face.age.bucket_probabilities.values()) == pytest.approx(
        expected.bucket_probabilities[0].tolist(), abs=1e-4
    )
    assert list(face.gender.probabilities.model_dump().values()) == pytest.approx(
        expected.gender_probabilities[0].tolist(), abs=1e-4
    )
    assert face.age.years == pytest.approx(float(expected.age_years[0]), abs=0.05)
    assert (face.age.interval.low, face.age.interval.high) == pytest.approx(
        expected.age_interval[0].tolist(), abs=0.05
    )


def test_different_images_give_different_predictions(pipeline: Pipeline) -> None:
    dark = pipeline.predict_image(encode(np.full((32, 32, 3), 10, np.uint8), "PNG"), SKIP)
    bright = pipeline.predict_image(encode(np.full((32, 32, 3), 245, np.uint8), "PNG"), SKIP)

    assert (
        dark.faces[0].age.bucket_probabilities != bright.faces[0].age.bucket_probabilities
        or dark.faces[0].age.years != bright.faces[0].age.years
    )


def test_box_and_size_follow_the_exif_orientation(pipeline: Pipeline) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    data = encode(noise_image(20, 60, seed=3), "JPEG", exif=exif.tobytes())

    result = pipeline.predict_image(data, SKIP)

    assert (result.image.width, result.image.height) == (20, 60)
    assert (result.faces[0].box.width, result.faces[0].box.height) == (20, 60)


def test_timings_cover_each_stage(pipeline: Pipeline) -> None:
    timings = pipeline.predict_image(encode(noise_image(64, 64, seed=4), "JPEG"), SKIP).timings_ms

    stages = (timings.decode, timings.detect, timings.inference)
    assert all(stage >= 0.0 for stage in stages)
    assert timings.inference > 0.0
    assert sum(stages) == pytest.approx(timings.total, abs=0.05)


def test_undecodable_bytes_raise_the_typed_error(pipeline: Pipeline) -> None:
    with pytest.raises(ImageDecodeError):
        pipeline.predict_image(b"this is not an image", DetectMode.SKIP)


def test_pixel_limit_comes_from_the_settings(
    tiny_registry: Registry, tiny_models_dir: Path
) -> None:
    small = Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir, max_image_pixels=100))
    with pytest.raises(ImageTooLarge):
        small.predict_image(encode(noise_image(20, 20, seed=5), "PNG"))


def test_each_answer_has_its_own_request_id(pipeline: Pipeline) -> None:
    data = encode(noise_image(24, 24, seed=6), "PNG")
    prediction, other = (pipeline.predict_image(data, SKIP) for _ in range(2))

    response = prediction.model_copy(update={"request_id": "abc"})

    assert response.request_id == "abc"
    assert other.request_id != prediction.request_id and len(other.request_id) == 32
    document = response.model_dump(mode="json")
    assert document["image"] == {"width": 24, "height": 24}
    face = document["faces"][0]
    assert face["box"] == {"x": 0, "y": 0, "width": 24, "height": 24}
    assert face["gender"]["label"] == prediction.faces[0].gender.label
    assert face["age"]["years"] == prediction.faces[0].age.years


def test_locate_stops_before_detection_once_asked(pipeline: Pipeline) -> None:
    stop = threading.Event()
    stop.set()

    with pytest.raises(WorkStopped):
        pipeline.locate(encode(noise_image(30, 40, seed=2), "PNG"), SKIP, stop=stop)


def test_price_reads_the_header_only(pipeline: Pipeline) -> None:
    data = encode(noise_image(30, 40, seed=3), "JPEG")

    price = pipeline.price(data[:-100], SKIP)  # the pixel data cut short: still priced

    assert (price.width, price.height) == (40, 30)
    assert price.decode_bytes >= 40 * 30 * 3
