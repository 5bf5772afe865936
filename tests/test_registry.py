"""Registry: bundle discovery and checks, prediction over tiny random-weight bundles, age maths."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tests.bundles import INTERVAL_LEVEL, write_tiny_bundles

from facedemo.age_distribution import (
    age_summary,
    bucket_mass,
    distribution_summary,
    softmax,
)
from facedemo.bundles import available_versions
from facedemo.errors import BundleError, NotReadyError, UnknownModelError
from facedemo.head_combination import BUCKET_HEAD_WEIGHT
from facedemo.manifest import (
    AGE_BUCKET_LABELS,
    BUNDLE_FILES,
    CLASSIFIER_NAME,
    GENDER_LABELS,
    MANIFEST_FILE,
    MODEL_FILE,
    REGRESSOR_NAME,
    sha256_file,
)
from facedemo.registry import PADDED_BATCH_SIZES, Registry
from train.bundle import write_bundle

AGES = 101


def random_crops(count: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.fixture
def models_copy(tiny_models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundles that a test may damage."""
    return Path(shutil.copytree(tiny_models_dir, tmp_path / "models"))


def edit_manifest(bundle_dir: Path, **changes: object) -> None:
    path = bundle_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(changes)
    path.write_text(json.dumps(manifest), encoding="utf-8")


# ----------------------------------------------------------------------------- prediction


@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_predict_shapes_and_ranges(tiny_registry: Registry, count: int) -> None:
    predictions = tiny_registry.predict(random_crops(count, seed=count))

    assert predictions.bucket_probabilities.shape == (count, len(AGE_BUCKET_LABELS))
    assert predictions.gender_probabilities.shape == (count, len(GENDER_LABELS))
    assert predictions.age_years.shape == (count,)
    assert predictions.age_interval.shape == (count, 2)
    for array in (
        predictions.bucket_probabilities,
        predictions.gender_probabilities,
        predictions.age_years,
        predictions.age_interval,
    ):
        assert array.dtype == np.float32
    for probabilities in (predictions.bucket_probabilities, predictions.gender_probabilities):
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert ((probabilities >= 0) & (probabilities <= 1)).all()
    low, high = predictions.age_interval.T
    # The tiny models' age distributions are broad, so the mean lies inside the 80% interval.
    assert (low <= predictions.age_years).all() and (predictions.age_years <= high).all()
    assert (low >= 0).all() and (high <= AGES - 1).all()
    assert predictions.interval_level == INTERVAL_LEVEL


def test_same_crop_same_answer_alone_or_in_a_batch(tiny_registry: Registry) -> None:
    crops = random_crops(40, seed=1)
    batch = tiny_registry.predict(crops)

    # Different crops must give different answers, or this test would prove nothing.
    assert np.ptp(batch.age_years) > 0.1
    assert np.ptp(batch.bucket_probabilities[:, 0]) > 1e-4
    for index in (0, 17, 33, 39):  # first chunk, padded second chunk (8 -> 8), its last row
        alone = tiny_registry.predict(crops[index : index + 1])
        np.testing.assert_allclose(
            alone.bucket_probabilities[0], batch.bucket_probabilities[index], atol=1e-5
        )
        np.testing.assert_allclose(
            alone.gender_probabilities[0], batch.gender_probabilities[index], atol=1e-5
        )
        np.testing.assert_allclose(alone.age_years[0], batch.age_years[index], atol=1e-3)
        np.testing.assert_allclose(alone.age_interval[0], batch.age_interval[index], atol=1e-3)


def test_predict_is_deterministic_across_loads(tiny_registry: Registry, tmp_path: Path) -> None:
    crops = random_crops(5, seed=2)
    write_tiny_bundles(tmp_path)  # same default seed: same weights, written again
    first = tiny_registry.predict(crops)
    second = Registry.load(tmp_path).predict(crops)
    np.testing.assert_allclose(first.age_years, second.age_years, atol=1e-5)
    np.testing.assert_allclose(first.bucket_probabilities, second.bucket_probabilities, atol=1e-6)


def test_predict_from_several_threads(tiny_registry: Registry) -> None:
    batches = [random_crops(count, seed=10 + count) for count in (1, 5, 32, 40)]
    expected = [tiny_registry.predict(batch).age_years for batch in batches]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(3):
            results[index] = tiny_registry.predict(batches[index]).age_years

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, years in enumerate(expected):
        np.testing.assert_allclose(results[index], years, atol=1e-5)


@pytest.mark.parametrize(
    "crops",
    [
        np.zeros((2, 32, 32, 3), np.float32),
        np.zeros((2, 24, 32, 3), np.uint8),
        np.zeros((32, 32, 3), np.uint8),
        np.zeros((2, 32, 32, 4), np.uint8),
    ],
)
def test_predict_rejects_crops_of_the_wrong_kind(
    tiny_registry: Registry, crops: np.ndarray
) -> None:
    with pytest.raises(ValueError, match="crops must"):
        tiny_registry.predict(crops)


def test_registry_describes_what_it_loaded(tiny_registry: Registry) -> None:
    manifests = tiny_registry.manifests()
    assert sorted(manifests) == sorted([CLASSIFIER_NAME, REGRESSOR_NAME])
    assert tiny_registry.manifest(REGRESSOR_NAME).version == "1.0.0"
    assert tiny_registry.manifest(CLASSIFIER_NAME).task == "age-gender-classification"
    assert tiny_registry.input_size == (32, 32)
    assert tiny_registry.device in ("CPU:0", "GPU:0")
    info = tiny_registry.device_info
    assert info["name"] == tiny_registry.device
    assert info["kind"] == tiny_registry.device[:3].lower()
    assert info["tensorflow"].startswith("2.")


def test_unknown_model_name_lists_known_names(tiny_registry: Registry) -> None:
    with pytest.raises(UnknownModelError) as raised:
        tiny_registry.manifest("age-classifier")
    message = str(raised.value)
    assert "age-classifier" in message
    assert CLASSIFIER_NAME in message and REGRESSOR_NAME in message
    assert raised.value.known == sorted([CLASSIFIER_NAME, REGRESSOR_NAME])


def test_padded_sizes_cover_one_chunk() -> None:
    assert PADDED_BATCH_SIZES[0] == 1
    assert list(PADDED_BATCH_SIZES) == sorted(PADDED_BATCH_SIZES)


# ----------------------------------------------------------------------------- versions


@pytest.fixture(scope="module")
def versioned_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models_dir = tmp_path_factory.mktemp("versioned")
    for version in ("1.0.0", "1.2.0", "1.10.0"):
        write_tiny_bundles(models_dir, version=version)
    # What an interrupted write_bundle leaves behind: a hidden staging folder.
    staging = models_dir / REGRESSOR_NAME / ".writing-abc123" / "bundle"
    staging.mkdir(parents=True)
    (staging / MODEL_FILE).write_bytes(b"half written")
    return models_dir


def test_versions_sort_numerically_and_skip_staging_folders(versioned_models_dir: Path) -> None:
    assert available_versions(versioned_models_dir, REGRESSOR_NAME) == ["1.0.0", "1.2.0", "1.10.0"]


def test_newest_version_is_loaded(versioned_models_dir: Path) -> None:
    registry = Registry.load(versioned_models_dir, device="cpu")
    assert registry.manifest(CLASSIFIER_NAME).version == "1.10.0"
    assert registry.manifest(REGRESSOR_NAME).version == "1.10.0"


def test_pinned_version_is_loaded(versioned_models_dir: Path) -> None:
    registry = Registry.load(versioned_models_dir, device="cpu", pins={REGRESSOR_NAME: "1.2.0"})
    assert registry.manifest(REGRESSOR_NAME).version == "1.2.0"
    assert registry.manifest(CLASSIFIER_NAME).version == "1.10.0"


def test_pin_to_a_missing_version_names_the_available_ones(versioned_models_dir: Path) -> None:
    expected = r"'2\.0\.0'.*available versions: 1\.0\.0, 1\.2\.0, 1\.10\.0$"
    with pytest.raises(BundleError, match=expected):
        Registry.load(versioned_models_dir, pins={CLASSIFIER_NAME: "2.0.0"})


def test_pin_for_an_unknown_model_is_refused(tiny_models_dir: Path) -> None:
    with pytest.raises(BundleError, match="unknown models age-estimator"):
        Registry.load(tiny_models_dir, pins={"age-estimator": "1.0.0"})


# ----------------------------------------------------------------------------- broken bundles


def test_checksum_mismatch_is_refused(models_copy: Path) -> None:
    model_path = models_copy / CLASSIFIER_NAME / "1.0.0" / MODEL_FILE
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch") as raised:
        Registry.load(models_copy)
    assert str(model_path) in str(raised.value)


def truncate_to_half(model_path: Path) -> None:
    data = model_path.read_bytes()
    model_path.write_bytes(data[: len(data) // 2])  # what an interrupted copy leaves


def replace_with_an_lfs_pointer(model_path: Path) -> None:
    # What a clone without git-lfs checks out in place of the model.
    model_path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{sha256_file(model_path)}\nsize {model_path.stat().st_size}\n"
    )


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (truncate_to_half, "is truncated: its zip archive has no end"),
        (replace_with_an_lfs_pointer, "is a Git LFS pointer"),
    ],
)
def test_a_damaged_model_file_is_named_with_its_bundle_and_what_is_wrong(
    models_copy: Path, damage: Callable[[Path], None], expected: str
) -> None:
    model_path = models_copy / REGRESSOR_NAME / "1.0.0" / MODEL_FILE
    damage(model_path)

    with pytest.raises(BundleError) as raised:
        Registry.load(models_copy)

    detail = raised.value.detail
    assert detail.startswith(f"bundle {REGRESSOR_NAME} 1.0.0: {model_path} {expected}")
    assert "checksum mismatch" in detail


def test_a_truncated_model_file_whose_checksum_matches_is_not_called_missing(
    models_copy: Path,
) -> None:
    # A bundle written from a file cut short: the checksum agrees; Keras would say "File not
    # found".
    bundle = models_copy / REGRESSOR_NAME / "1.0.0"
    truncate_to_half(bundle / MODEL_FILE)
    edit_manifest(bundle, model_sha256=sha256_file(bundle / MODEL_FILE))

    with pytest.raises(BundleError) as raised:
        Registry.load(models_copy)

    detail = raised.value.detail
    assert detail.startswith(
        f"bundle {REGRESSOR_NAME} 1.0.0: {bundle / MODEL_FILE} is truncated: its zip archive has "
        "no end"
    )
    assert "not found" not in detail.lower()


def test_a_load_asked_to_stop_ends_before_its_next_step(tiny_models_dir: Path) -> None:
    stop = threading.Event()
    stop.set()

    with pytest.raises(NotReadyError, match="loading stopped: the service is shutting down"):
        Registry.load(tiny_models_dir, stop=stop)


@pytest.mark.parametrize("missing", BUNDLE_FILES)
def test_missing_bundle_file_is_named(models_copy: Path, missing: str) -> None:
    (models_copy / REGRESSOR_NAME / "1.0.0" / missing).unlink()
    with pytest.raises(BundleError, match=f"incomplete: missing {missing}"):
        Registry.load(models_copy)


def test_malformed_manifest_json_is_refused(models_copy: Path) -> None:
    (models_copy / CLASSIFIER_NAME / "1.0.0" / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="(?s)not a valid manifest.*Invalid JSON"):
        Registry.load(models_copy)


def test_manifest_missing_a_field_is_refused_with_pydantic_message(models_copy: Path) -> None:
    path = models_copy / CLASSIFIER_NAME / "1.0.0" / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    del manifest["task"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"(?s)not a valid manifest.*task.*Field required"):
        Registry.load(models_copy)


def test_manifest_name_must_match_its_folder(models_copy: Path) -> None:
    edit_manifest(models_copy / CLASSIFIER_NAME / "1.0.0", name="age-classifier")
    with pytest.raises(BundleError, match="describes age-classifier 1.0.0, but the folder says"):
        Registry.load(models_copy)


def test_manifest_version_must_match_its_folder(models_copy: Path) -> None:
    shutil.copytree(models_copy / REGRESSOR_NAME / "1.0.0", models_copy / REGRESSOR_NAME / "2.0.0")
    with pytest.raises(BundleError, match="1.0.0, but the folder says age-regressor 2.0.0"):
        Registry.load(models_copy)


@pytest.mark.parametrize("name", [REGRESSOR_NAME, CLASSIFIER_NAME])
def test_missing_model_bundle_says_which_and_where(models_copy: Path, name: str) -> None:
    shutil.rmtree(models_copy / name)
    with pytest.raises(BundleError, match=f"no bundle for model '{name}'") as raised:
        Registry.load(models_copy)
    assert str(models_copy / name) in str(raised.value)


def test_missing_models_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Registry.load(tmp_path / "nowhere")


def test_task_must_match_the_name(models_copy: Path) -> None:
    edit_manifest(models_copy / CLASSIFIER_NAME / "1.0.0", task="age-regression")
    with pytest.raises(BundleError, match="task is 'age-regression', expected"):
        Registry.load(models_copy)


def test_output_labels_must_match_the_contract(models_copy: Path) -> None:
    bundle = models_copy / CLASSIFIER_NAME / "1.0.0"
    outputs = json.loads((bundle / MANIFEST_FILE).read_text())["outputs"]
    outputs["gender"]["labels"] = ["female", "male"]
    edit_manifest(bundle, outputs=outputs)
    with pytest.raises(BundleError, match="output 'gender' should be probabilities"):
        Registry.load(models_copy)


@pytest.mark.parametrize("name", [REGRESSOR_NAME, CLASSIFIER_NAME])
def test_an_age_head_needs_a_calibration(models_copy: Path, name: str) -> None:
    edit_manifest(models_copy / name / "1.0.0", calibration=None)
    with pytest.raises(BundleError, match=f"{name} 1.0.0: an age_logits head needs a calibration"):
        Registry.load(models_copy)


def test_age_heads_must_share_the_interval_level(models_copy: Path) -> None:
    calibration = {"temperature": 1.0, "interval_level": 0.9, "fitted_on": "test"}
    edit_manifest(models_copy / CLASSIFIER_NAME / "1.0.0", calibration=calibration)
    with pytest.raises(BundleError, match=r"share one interval level .* levels \[0.8, 0.9\]"):
        Registry.load(models_copy)


def test_an_auxiliary_head_must_have_the_contract_labels(models_copy: Path) -> None:
    bundle = models_copy / REGRESSOR_NAME / "1.0.0"
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    outputs = manifest["outputs"] | {"gender": {"kind": "probabilities", "labels": ["m", "f"]}}
    edit_manifest(bundle, outputs=outputs)
    with pytest.raises(BundleError, match="output 'gender' should be probabilities over labels"):
        Registry.load(models_copy)


def test_model_outputs_must_match_the_manifest(models_copy: Path) -> None:
    bundle = models_copy / REGRESSOR_NAME / "1.0.0"
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    ages = {"kind": "logits", "labels": [str(age) for age in range(50)]}
    edit_manifest(bundle, outputs=manifest["outputs"] | {"age_logits": ages})
    with pytest.raises(BundleError, match=r"model outputs \{'age_logits': \(101,\), .* not match"):
        Registry.load(models_copy)


def test_model_input_must_match_the_manifest(models_copy: Path) -> None:
    for name in (CLASSIFIER_NAME, REGRESSOR_NAME):
        edit_manifest(models_copy / name / "1.0.0", input={"height": 48, "width": 48})
    with pytest.raises(BundleError, match=r"model inputs are \[\(None, 32, 32, 3\)\]"):
        Registry.load(models_copy)


def test_bundle_with_python_code_is_refused(models_copy: Path, tmp_path: Path) -> None:
    # A Lambda layer stores Python bytecode; safe mode must refuse to run it.
    bundle = models_copy / REGRESSOR_NAME / "1.0.0"
    fields = json.loads((bundle / MANIFEST_FILE).read_text())
    for computed in ("model_sha256", "created", "parameters"):
        del fields[computed]
    inputs = keras.Input((32, 32, 3), name="face")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(lambda x: x / 255.0)(inputs))
    model = keras.Model(
        inputs,
        {
            "age_logits": keras.layers.Dense(AGES, name="age_logits")(pooled),
            "gender": keras.layers.Dense(2, activation="softmax", name="gender")(pooled),
        },
    )
    shutil.rmtree(models_copy / REGRESSOR_NAME)
    write_bundle(models_copy, model, fields, "# unsafe\n")
    with pytest.raises(BundleError, match="(?s)could not load .*model.keras.*safe_mode=False"):
        Registry.load(models_copy)


def test_models_must_share_one_input_size(models_copy: Path, tmp_path: Path) -> None:
    write_tiny_bundles(tmp_path / "small", size=24)
    shutil.rmtree(models_copy / REGRESSOR_NAME)
    shutil.copytree(tmp_path / "small" / REGRESSOR_NAME, models_copy / REGRESSOR_NAME)
    with pytest.raises(BundleError, match="share one input size"):
        Registry.load(models_copy)


def test_other_input_sizes_and_age_ranges_load(tmp_path: Path) -> None:
    write_tiny_bundles(tmp_path, size=24, ages=60, temperature=2.0)
    registry = Registry.load(tmp_path, device="cpu")
    predictions = registry.predict(random_crops(3, size=24))
    assert registry.input_size == (24, 24)
    assert (predictions.age_interval <= 59).all()


# ----------------------------------------------------------------------------- age maths


def _head_outputs(registry: Registry, crops: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    batch = tf.convert_to_tensor(crops.astype(np.float32))
    return {
        name: {output: values.numpy() for output, values in loaded.function(batch).items()}
        for name, loaded in registry._models.items()
    }


def test_predict_combines_every_head(tiny_registry: Registry) -> None:
    crops = random_crops(3)
    heads = _head_outputs(tiny_registry, crops)
    classifier, regressor = heads[CLASSIFIER_NAME], heads[REGRESSOR_NAME]
    # The tiny classifier's age head has temperature 2, the regressor's 1 (tests/bundles.py).
    ages = softmax((classifier["age_logits"] / 2.0 + regressor["age_logits"] / 1.0) / 2)
    years, interval = distribution_summary(ages, INTERVAL_LEVEL)

    got = tiny_registry.predict(crops)

    np.testing.assert_allclose(got.age_years, years, atol=1e-4)
    np.testing.assert_allclose(got.age_interval, interval, atol=1e-4)
    np.testing.assert_allclose(
        got.gender_probabilities, (classifier["gender"] + regressor["gender"]) / 2, atol=1e-6
    )
    weight = BUCKET_HEAD_WEIGHT
    buckets = weight * classifier["age_bucket"] + (1 - weight) * bucket_mass(ages)
    np.testing.assert_allclose(got.bucket_probabilities, buckets, atol=1e-5)
    np.testing.assert_allclose(got.bucket_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_bundles_without_auxiliary_heads_use_the_required_ones(tmp_path: Path) -> None:
    write_tiny_bundles(tmp_path, auxiliary_heads=False, temperature=1.5)
    registry = Registry.load(tmp_path, device="cpu")
    crops = random_crops(4)
    heads = _head_outputs(registry, crops)
    years, interval = age_summary(heads[REGRESSOR_NAME]["age_logits"], 1.5, INTERVAL_LEVEL)

    got = registry.predict(crops)

    np.testing.assert_allclose(got.gender_probabilities, heads[CLASSIFIER_NAME]["gender"])
    np.testing.assert_allclose(got.age_years, years, atol=1e-4)
    np.testing.assert_allclose(got.age_interval, interval, atol=1e-4)


def test_a_head_whose_temperature_grows_with_age_is_tempered_face_by_face(tmp_path: Path) -> None:
    write_tiny_bundles(tmp_path, auxiliary_heads=False, temperature=1.5, age_exponent=0.7)
    registry = Registry.load(tmp_path, device="cpu")
    crops = random_crops(4)
    logits = _head_outputs(registry, crops)[REGRESSOR_NAME]["age_logits"]
    years, interval = age_summary(logits, 1.5, INTERVAL_LEVEL, age_exponent=0.7)
    _, one_temperature = age_summary(logits, 1.5, INTERVAL_LEVEL)

    got = registry.predict(crops)

    np.testing.assert_allclose(got.age_years, years, atol=1e-4)
    np.testing.assert_allclose(got.age_interval, interval, atol=1e-4)
    assert not np.allclose(got.age_interval, one_temperature, atol=1e-2)
