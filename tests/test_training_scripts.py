"""The training scripts end to end on a tiny generated UTKFace folder: train, bundle, serve.

One epoch on 80 noise images at 32x32: the figures mean nothing, but every step a real training
runs (split, cache, tf.data, both models' heads, calibration, manifest, model card, bundle
writing) runs here, and the registry must load and serve what the scripts wrote.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from tests.bundles import write_tiny_bundles
from tests.wiki_data import write_metadata, write_photos

from facedemo.manifest import (
    CLASSIFIER_NAME,
    MANIFEST_FILE,
    MODEL_CARD_FILE,
    MODEL_FILE,
    REGRESSOR_NAME,
)
from facedemo.registry import Registry
from train import classifier, recalibrate, regressor, teacher
from train.distill import TEACHER_OUTPUT
from train.teacher import EMBEDDING_SIZE

AGES = (5, 30, 60, 80)  # four buckets
IMAGES_PER_GROUP = 10  # per (bucket, gender): enough for one calibration and validation image


def write_utkface_folder(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    index = 0
    for age in AGES:
        for gender in (0, 1):
            for _ in range(IMAGES_PER_GROUP):
                index += 1
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                name = f"{age}_{gender}_{index % 5}_2017011700{index:07d}.jpg.chip.jpg"
                (folder / name).write_bytes(buffer.getvalue())


def fake_embedding(path: Path) -> np.ndarray:
    """A stand-in for the dlib teacher: the image's mean colour, spread over 128 numbers."""
    with Image.open(path) as image:
        colour = np.asarray(image.convert("RGB"), dtype=np.float32).mean(axis=(0, 1))
    return np.tile(colour / 255.0 - 0.5, EMBEDDING_SIZE // 3 + 1)[:EMBEDDING_SIZE]


def write_teacher_cache(data: Path, cache_dir: Path) -> None:
    paths = sorted(data.iterdir())
    teacher.embed_missing(paths, teacher.cache_path(cache_dir, data), 1, fake_embedding)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both scripts run once (the classifier with the residual backbone, a stride-3 stem and a
    stand-in teacher to distil, also into its gender targets; the regressor with the separable
    one, a WIKI file, every degradation and its own age-loss weight); returns the models
    folder."""
    root = tmp_path_factory.mktemp("training")
    write_utkface_folder(root / "utkface")
    wiki = write_metadata(root)
    write_photos(wiki)
    common = ["--data", str(root / "utkface"), "--models-dir", str(root / "models")]
    common += ["--cache-dir", str(root / "cache"), "--size", "32", "--epochs", "1"]
    common += ["--batch-size", "8", "--version", "0.0.1"]  # no --threads: TF is running already
    write_teacher_cache(root / "utkface", root / "cache")
    residual = ["--architecture", "residual", "--stem-stride", "3"]
    teacher_lessons = ["--distill-weight", "0.5", "--teacher-gender-weight", "0.25"]
    assert classifier.main([*common, *residual, *teacher_lessons]) == 0
    degradations = ["--zoom-out", "0.5", "--greyscale", "0.25", "--low-res", "0.75"]
    age_loss = ["--age-l1-weight", "0.5", "--age-sigma-growth", "0.05"]
    assert regressor.main([*common, "--wiki", str(wiki), *degradations, *age_loss]) == 0
    return root / "models"


@pytest.mark.parametrize("name", [CLASSIFIER_NAME, REGRESSOR_NAME])
def test_each_script_writes_a_complete_bundle(trained: Path, name: str) -> None:
    bundle = trained / name / "0.0.1"
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())

    sizes = manifest["training"]["split"]["sizes"]
    assert sizes == {"train": 64, "calibration": 8, "validation": 8}
    assert manifest["training"]["epochs_run"] == 1
    assert manifest["calibration"]["fitted_on"] == "calibration split"
    assert set(manifest["outputs"]) >= {"age_logits", "gender"}
    validation = manifest["metrics"]["validation"]
    assert validation["n"] == 8
    for figure in ("gender_accuracy", "age_bucket_accuracy", "age_mae", "age_interval_coverage"):
        assert validation[figure] is not None
    card = (bundle / MODEL_CARD_FILE).read_text()
    assert "--size 32" in card and "Responsible use" in card
    # Saved for serving: no optimizer state in the file.
    assert getattr(keras.saving.load_model(bundle / MODEL_FILE), "optimizer", None) is None


def test_the_regressor_records_the_wiki_photos(trained: Path) -> None:
    manifest = json.loads((trained / REGRESSOR_NAME / "0.0.1" / MANIFEST_FILE).read_text())
    extra = manifest["training"]["extra_training_data"]

    # Flat grey photos: the service's detector finds no face in them, so none is used.
    assert extra["passed_filters"] == 3
    assert extra["used"] + extra["no_face"] + extra["undecodable"] == 3
    card = (trained / REGRESSOR_NAME / "0.0.1" / MODEL_CARD_FILE).read_text()
    assert "IMDB-WIKI" in card and "teacher" not in card


def test_the_manifest_records_the_degradations_and_age_loss_settings(trained: Path) -> None:
    manifest = json.loads((trained / REGRESSOR_NAME / "0.0.1" / MANIFEST_FILE).read_text())
    config = manifest["training"]["config"]

    assert (config["zoom_out"], config["greyscale"], config["low_res"]) == (0.5, 0.25, 0.75)
    assert "--low-res 0.75" in manifest["training"]["command"]
    assert (config["age_l1_weight"], config["age_sigma_growth"]) == (0.5, 0.05)


def test_the_manifest_records_the_architecture(trained: Path) -> None:
    def config(name: str) -> dict[str, object]:
        manifest = json.loads((trained / name / "0.0.1" / MANIFEST_FILE).read_text())
        return dict(manifest["training"]["config"])

    classifier_config, regressor_config = config(CLASSIFIER_NAME), config(REGRESSOR_NAME)
    assert (classifier_config["architecture"], classifier_config["stem_stride"]) == ("residual", 3)
    assert (regressor_config["architecture"], regressor_config["stem_stride"]) == ("separable", 2)


def test_the_served_classifier_has_no_teacher_head(trained: Path) -> None:
    bundle = trained / CLASSIFIER_NAME / "0.0.1"
    manifest = json.loads((bundle / MANIFEST_FILE).read_text())
    model = keras.saving.load_model(bundle / MODEL_FILE)

    assert manifest["training"]["config"]["distill_weight"] == 0.5
    assert "--distill-weight 0.5" in manifest["training"]["command"]
    assert TEACHER_OUTPUT not in model.output_names
    assert manifest["training"]["config"]["teacher_gender_weight"] == 0.25
    card = (bundle / MODEL_CARD_FILE).read_text()
    assert "Distilled from a face-recognition teacher" in card
    assert "0.25 of each training face's gender target" in card
    assert set(model.output_names) == set(manifest["outputs"])


def test_distilling_without_the_teachers_embeddings_stops_with_a_hint(tmp_path: Path) -> None:
    write_utkface_folder(tmp_path / "utkface")
    arguments = ["--data", str(tmp_path / "utkface"), "--models-dir", str(tmp_path / "models")]
    arguments += ["--cache-dir", str(tmp_path / "cache"), "--size", "32", "--epochs", "1"]

    with pytest.raises(SystemExit, match="run `python -m train.teacher"):
        regressor.main([*arguments, "--distill-weight", "1"])
    assert not (tmp_path / "models").exists()


def test_the_registry_serves_what_the_scripts_wrote(trained: Path) -> None:
    registry = Registry.load(trained, device="cpu")
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)

    predictions = registry.predict(crops)

    assert np.isfinite(predictions.age_years).all()
    assert (predictions.age_interval[:, 0] <= predictions.age_interval[:, 1]).all()
    np.testing.assert_allclose(predictions.gender_probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_split_csv_lists_the_evaluation_splits(tmp_path: Path) -> None:
    from facedemo.evaluation import load_labelled_set
    from train import split_csv

    write_utkface_folder(tmp_path / "utkface")
    assert split_csv.main(["--data", str(tmp_path / "utkface"), "--out", str(tmp_path)]) == 0

    for name in ("calibration", "validation"):
        labelled = load_labelled_set(tmp_path / "utkface", tmp_path / f"{name}.csv")
        assert len(labelled.files) == 8
        for item in labelled.files:
            age, gender = item.path.name.split("_")[:2]
            assert (item.age, item.gender) == (float(age), int(gender))
    validation = (tmp_path / "validation.csv").read_text()
    assert not set(validation.splitlines()[1:]) & set(
        (tmp_path / "calibration.csv").read_text().splitlines()[1:]
    )


def test_recalibrating_a_bundle_refits_what_training_fitted_and_leaves_the_model(
    trained: Path, tmp_path: Path
) -> None:
    root = trained.parent
    bundle = tmp_path / "0.0.1"
    shutil.copytree(trained / REGRESSOR_NAME / "0.0.1", bundle)
    original = json.loads((bundle / MANIFEST_FILE).read_text())
    stale = original | {"calibration": original["calibration"] | {"temperature": 5.0}}
    stale["metrics"] = {"validation": original["metrics"]["validation"] | {"age_mae": 99.0}}
    (bundle / MANIFEST_FILE).write_text(json.dumps(stale))
    model_bytes = (bundle / MODEL_FILE).read_bytes()

    data = ["--data", str(root / "utkface"), "--cache-dir", str(root / "cache")]
    assert recalibrate.main([str(bundle), *data]) == 0

    refitted = json.loads((bundle / MANIFEST_FILE).read_text())
    assert refitted["calibration"] == original["calibration"] | {
        "fitted_on": recalibrate.REFITTED_ON
    }
    assert refitted["metrics"] == original["metrics"]
    assert (bundle / MODEL_FILE).read_bytes() == model_bytes
    assert refitted["model_sha256"] == original["model_sha256"]
    card = (bundle / MODEL_CARD_FILE).read_text()
    assert f"temperature {original['calibration']['temperature']:.3f}" in card


def test_recalibrating_on_other_data_is_refused_and_changes_nothing(
    trained: Path, tmp_path: Path
) -> None:
    root = trained.parent
    other = tmp_path / "utkface"
    shutil.copytree(root / "utkface", other)
    next(iter(sorted(other.iterdir()))).unlink()
    bundle = tmp_path / "0.0.1"
    shutil.copytree(trained / CLASSIFIER_NAME / "0.0.1", bundle)
    before = (bundle / MANIFEST_FILE).read_bytes()

    status = recalibrate.main([str(bundle), "--data", str(other), "--cache-dir", str(tmp_path)])

    assert status == 1
    assert (bundle / MANIFEST_FILE).read_bytes() == before


def test_a_bundle_without_an_age_head_is_refused(tmp_path: Path) -> None:
    write_tiny_bundles(tmp_path, auxiliary_heads=False)
    bundle = tmp_path / CLASSIFIER_NAME / "1.0.0"
    before = (bundle / MANIFEST_FILE).read_bytes()

    assert recalibrate.main([str(bundle), "--data", str(tmp_path / "nowhere")]) == 1
    assert (bundle / MANIFEST_FILE).read_bytes() == before
