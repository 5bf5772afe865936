"""`facedemo evaluate`: labelled sets, the batched pass through the pipeline, and the report."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from facedemo import cli, evaluation
from facedemo.cli import evaluate as cli_evaluate
from facedemo.config import Settings, get_settings
from facedemo.detect_mode import DetectMode
from facedemo.errors import InputError
from facedemo.evaluation import LabelledFile, LabelledSet, evaluate, load_labelled_set
from facedemo.head_combination import FacePredictions
from facedemo.imaging import ReducedImage
from facedemo.manifest import AGE_BUCKET_LABELS, CLASSIFIER_NAME, REGRESSOR_NAME
from facedemo.pipeline import FaceRegion, Pipeline

if TYPE_CHECKING:
    from facedemo.registry import Registry

REPORT_KEYS = {
    "n",
    "gender_accuracy",
    "age_bucket_accuracy",
    "age_mae",
    "age_interval_coverage",
    "groups",
    "age_bucket_confusion",
    "bucket_labels",
    "age_checks",
    "no_face",
    "errors",
    "models",
    "detect",
    "seconds",
}
# Seven UTKFace names: ages in four buckets, both genders, three races.
UTKFACE_NAMES = [
    "8_1_2_20170109150557335.jpg.chip.jpg",
    "23_0_0_20170116232725357.jpg.chip.jpg",
    "31_1_1_20170116220224657.jpg.chip.jpg",
    "44_0_0_20170117000000001.jpg.chip.jpg",
    "58_1_0_20170117000000002.jpg.chip.jpg",
    "61_0_20170109150557335.jpg.chip.jpg",  # malformed: no race
    "80_1_2_20170117000000003.jpg.chip.jpg",
]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def noise(seed: int, side: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.fixture
def utkface_folder(tmp_path: Path) -> Path:
    """UTKFace-named images, plus one that does not decode and one without labels."""
    folder = tmp_path / "utkface"
    folder.mkdir()
    for seed, name in enumerate(UTKFACE_NAMES):
        (folder / name).write_bytes(png_bytes(noise(seed)))
    (folder / "30_0_0_20170117000000009.jpg.chip.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (folder / "holiday.jpg").write_bytes(png_bytes(noise(99)))
    (folder / "notes.txt").write_text("ignored: not an image name")
    return folder


@pytest.fixture
def pipeline(tiny_registry: Registry, tiny_models_dir: Path) -> Pipeline:
    return Pipeline(tiny_registry, Settings(models_dir=tiny_models_dir))


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path) -> Iterator[None]:
    for name in ("MODEL_PINS", "DEVICE", "LOG_LEVEL"):
        monkeypatch.delenv(f"FACEDEMO_{name}", raising=False)
    monkeypatch.setenv("FACEDEMO_MODELS_DIR", str(tiny_models_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def shared_registry(monkeypatch: pytest.MonkeyPatch, tiny_registry: Registry) -> None:
    """The CLI reuses the session's registry instead of loading the same bundles again."""
    monkeypatch.setattr(cli_evaluate, "load_registry", lambda settings: tiny_registry)


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    status = cli.main(["evaluate", *argv, "--json"])
    out = capsys.readouterr().out
    return status, json.loads(out)


# ----------------------------------------------------------------------------- the CLI


def test_evaluate_a_utkface_folder_prints_one_json_report(
    settings_env: None,
    utkface_folder: Path,
    pipeline: Pipeline,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, report = run_json([str(utkface_folder)], capsys)

    assert status == 0
    assert set(report) == REPORT_KEYS
    assert report["n"] == len(UTKFACE_NAMES)
    assert report["no_face"] == 0
    assert {error["file"] for error in report["errors"]} == {
        "30_0_0_20170117000000009.jpg.chip.jpg",
        "holiday.jpg",
    }
    for key in ("gender_accuracy", "age_bucket_accuracy", "age_interval_coverage"):
        assert 0.0 <= report[key] <= 1.0
    assert report["age_mae"] >= 0.0
    assert report["bucket_labels"] == list(AGE_BUCKET_LABELS)
    confusion = np.array(report["age_bucket_confusion"])
    assert confusion.shape == (5, 5) and confusion.sum() == len(UTKFACE_NAMES)
    assert confusion.sum(axis=1).tolist() == [2, 2, 2, 1, 0]  # true buckets of the names
    assert set(report["groups"]) == {"gender", "age_bucket", "race"}
    assert report["groups"]["gender"]["female"]["n"] == 4
    assert report["groups"]["race"]["asian"]["n"] == 2
    checks = report["age_checks"]
    assert [check["threshold"] for check in checks] == [13, 16, 18, 21, 25]
    for check in checks:  # every labelled face is under or over each threshold
        assert check["n_under"] + check["n_over"] == len(UTKFACE_NAMES)
        assert (
            check["groups"]["race asian"]["n_under"] + check["groups"]["race asian"]["n_over"] == 2
        )
        assert 0.0 <= check["ece"] <= 1.0 and 0.0 <= check["brier"] <= 1.0
    assert {model["name"] for model in report["models"]} == {CLASSIFIER_NAME, REGRESSOR_NAME}
    assert report["detect"] == "skip"
    assert report["seconds"] >= 0.0
    # The figures are those of the API's own per-image path.
    ages = [int(name.split("_")[0]) for name in UTKFACE_NAMES]
    served = [
        pipeline.predict_image((utkface_folder / name).read_bytes(), DetectMode.SKIP).faces[0]
        for name in UTKFACE_NAMES
    ]
    mae = np.mean([abs(face.age.years - age) for face, age in zip(served, ages, strict=True)])
    assert report["age_mae"] == pytest.approx(mae, abs=1e-3)


def test_evaluate_a_folder_with_a_csv_of_gender_only_gives_null_age_figures(
    settings_env: None,
    shared_registry: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "people").mkdir()
    for index in range(4):
        (tmp_path / "people" / f"p{index}.png").write_bytes(png_bytes(noise(index)))
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,gender\npeople/p0.png,male\npeople/p1.png,female\npeople/p2.png,Female\n"
        "people/p3.png,\npeople/missing.png,male\n"
    )

    status, report = run_json([str(tmp_path), "--labels", str(labels)], capsys)

    assert status == 0
    assert set(report) == REPORT_KEYS
    assert report["n"] == 4
    assert 0.0 <= report["gender_accuracy"] <= 1.0
    assert report["age_bucket_accuracy"] is None
    assert report["age_mae"] is None
    assert report["age_interval_coverage"] is None
    assert report["age_bucket_confusion"] is None
    assert report["age_checks"] == []  # no ages, no age checks
    assert set(report["groups"]) == {"gender"}
    assert report["groups"]["gender"]["female"]["n"] == 2
    assert report["groups"]["gender"]["female"]["age_mae"] is None
    [error] = report["errors"]
    assert error["file"] == "people/missing.png" and "cannot read" in error["error"]


def test_evaluate_prints_a_text_report_with_the_figures(
    settings_env: None,
    shared_registry: None,
    utkface_folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, report = run_json([str(utkface_folder)], capsys)

    status = cli.main(["evaluate", str(utkface_folder)])

    captured = capsys.readouterr()
    assert status == 0
    text = captured.out
    assert f"faces measured (n): {report['n']}" in text
    assert f"gender accuracy        {report['gender_accuracy']:.4f}" in text
    assert f"age bucket accuracy    {report['age_bucket_accuracy']:.4f}" in text
    assert f"age MAE (years)        {report['age_mae']:.2f}" in text
    assert f"age interval coverage  {report['age_interval_coverage']:.4f}" in text
    assert "age bucket confusion" in text
    assert "gender=female" in text and "race=asian" in text
    assert "holiday.jpg: no age and gender in the file name" in text
    assert "\r" not in captured.err  # no progress bar: stderr is not a terminal


def test_evaluate_limit_keeps_the_first_images(
    settings_env: None,
    shared_registry: None,
    utkface_folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, report = run_json([str(utkface_folder), "--limit", "3"], capsys)

    # In name order: 23_..., 30_... (undecodable), 31_...; "holiday.jpg" has no labels at all.
    assert status == 0
    assert report["n"] == 2
    assert {name: group["n"] for name, group in report["groups"]["age_bucket"].items()} == {
        "0-24": 1,
        "25-49": 1,
    }
    assert [error["file"] for error in report["errors"]] == [
        "holiday.jpg",
        "30_0_0_20170117000000009.jpg.chip.jpg",
    ]


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("file,gender\na.png,male\n", "needs a 'path' column"),
        ("path\na.png\n", "at least one of 'age', 'gender'"),
        ("path,gender\na.png,man\n", "line 2: gender 'man' is not one of male, female"),
        ("path,age\na.png,30\nb.png,old\n", "line 3: age 'old' is not a number"),
        ("path,age,race\na.png,30,martian\n", "race 'martian' is not one of white"),
        ("path,age\n", "lists no images"),
    ],
)
def test_evaluate_refuses_a_bad_labels_file_before_loading_models(
    settings_env: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    csv_text: str,
    message: str,
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(csv_text)

    def no_loading(settings: Settings) -> None:
        raise AssertionError("models loaded for a labels file that cannot be used")

    monkeypatch.setattr(cli_evaluate, "load_registry", no_loading)

    status = cli.main(["evaluate", str(tmp_path), "--labels", str(labels)])

    assert status == 2
    assert message in capsys.readouterr().err


def test_evaluate_refuses_a_folder_without_utkface_names(
    settings_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "holiday.jpg").write_bytes(png_bytes(noise(1)))

    status = cli.main(["evaluate", str(tmp_path)])

    assert status == 2
    assert "--labels" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the maths


class BlackMeansNoFace(Pipeline):
    """The skip-mode pipeline, except that an all-black image holds no face."""

    def _locate_faces(self, image: ReducedImage, detect: DetectMode) -> list[FaceRegion]:
        return [] if image.pixels.max() == 0 else super()._locate_faces(image, detect)


# Per image (a flat colour, which identifies it in the crops): its labels and what the fake
# models answer. gender: 0 male, 1 female; bucket: the classifier's most probable bucket.
CASES = [
    # age, gender, race,  p(female), bucket, years, interval
    (30.0, 0, "white", 0.1, 1, 32.0, (28.0, 36.0)),  # gender right, bucket right, covered
    (60.0, 1, "black", 0.4, 1, 50.0, (45.0, 55.0)),  # gender wrong, bucket wrong, not covered
    (10.0, 1, "white", 0.8, 0, 13.5, (11.0, 16.0)),  # gender right, bucket right, not covered
    (80.0, 0, "black", 0.7, 3, 75.0, (70.0, 85.0)),  # gender wrong, bucket right, covered
]


def fake_predict(crops: np.ndarray) -> FacePredictions:
    """Known answers, looked up by each crop's flat colour (20, 60, 100, 140 -> case 0..3)."""
    rows = [CASES[(int(crop[0, 0, 0]) - 20) // 40] for crop in crops]
    buckets = np.zeros((len(rows), len(AGE_BUCKET_LABELS)), np.float32)
    for index, row in enumerate(rows):
        buckets[index] = 0.1
        buckets[index, row[4]] = 0.6
    return FacePredictions(
        bucket_probabilities=buckets,
        gender_probabilities=np.array([(1 - row[3], row[3]) for row in rows], np.float32),
        age_years=np.array([row[5] for row in rows], np.float32),
        age_interval=np.array([row[6] for row in rows], np.float32).reshape(-1, 2),
        interval_level=0.8,
        age_distribution=np.eye(101, dtype=np.float32)[[int(row[5]) for row in rows]],
    )


def test_evaluation_figures_match_hand_computed_values(
    tiny_registry: Registry,
    tiny_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tiny_registry, "predict", fake_predict)
    monkeypatch.setattr(evaluation, "GROUP_SIZE", 2)  # several groups, decoded one ahead
    files = []
    for index, (age, gender, race, *_) in enumerate(CASES):
        path = tmp_path / f"case{index}.png"
        path.write_bytes(png_bytes(np.full((20, 30, 3), 20 + 40 * index, np.uint8)))
        files.append(LabelledFile(path.name, path, age, gender, ("white", "black").index(race)))
    black = tmp_path / "black.png"
    black.write_bytes(png_bytes(np.zeros((20, 20, 3), np.uint8)))
    files.insert(2, LabelledFile(black.name, black, 40.0, 0, 0))
    calls: list[tuple[int, int]] = []

    report = evaluate(
        BlackMeansNoFace(tiny_registry, Settings(models_dir=tiny_models_dir)),
        LabelledSet(files=files, unlabelled=[]),
        DetectMode.SKIP,
        progress=lambda done, total: calls.append((done, total)),
    )

    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert report["n"] == 4
    assert report["no_face"] == 1
    assert report["errors"] == []
    assert report["gender_accuracy"] == 0.5  # cases 0 and 2 right
    assert report["age_bucket_accuracy"] == 0.75  # case 1 wrong: 60 is 50-74, predicted 25-49
    assert report["age_mae"] == pytest.approx((2.0 + 10.0 + 3.5 + 5.0) / 4)
    assert report["age_interval_coverage"] == 0.5  # cases 0 and 3 cover their age
    assert report["age_bucket_confusion"] == [
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
    ]
    male, female = report["groups"]["gender"]["male"], report["groups"]["gender"]["female"]
    assert (male["n"], male["gender_accuracy"], male["age_mae"]) == (2, 0.5, 3.5)
    assert (female["n"], female["age_mae"], female["age_interval_coverage"]) == (2, 6.75, 0.0)
    assert report["groups"]["race"]["black"]["age_bucket_accuracy"] == 0.5
    assert set(report["groups"]["age_bucket"]) == {"0-24", "25-49", "50-74", "75-99"}


def test_load_labelled_set_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a folder"):
        load_labelled_set(tmp_path / "nowhere")
