"""Face embeddings from a pretrained face-recognition network, as distillation targets.

dlib's ResNet face descriptor (128 numbers per face, trained on about 3 million faces of
thousands of people, none of them from UTKFace; public domain / CC0, shipped in the
`face_recognition_models` package's wheel with its 5-point landmark model) has learnt from far
more faces than UTKFace holds. `python -m train.classifier --distill-weight W` trains an extra
head of the student to predict these embeddings, so that the student's features learn some of
what the teacher knows; the head is dropped from the served model, which costs what it did.

    .venv/bin/pip install -e '.[teacher]'
    .venv/bin/python -m train.teacher --data ../shared/data/utkface --workers 2

The teacher is slow on a CPU (a tenth to a quarter of a second a face, by machine: 16 to 40
minutes for the training split on two cores), so the embeddings are cached in one file per
image folder and a run only computes what the cache lacks.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from train.common import DEFAULT_DATA, DEFAULT_SEED, REPO_ROOT, SPLIT_FRACTIONS
from train.utkface import read_rgb, scan_folder, stratified_split

EMBEDDING_SIZE = 128
CHIP_SIZE = 150  # the descriptor network's input, in pixels
CHIP_PADDING = 0.25  # dlib's default margin around the landmarks' face
SAVE_EVERY = 1000  # images between cache writes, so an interrupted run keeps its work

Embedder = Callable[[Path], np.ndarray]


def cache_path(cache_dir: Path, data: Path) -> Path:
    """The cache file of one image folder's embeddings."""
    return cache_dir / f"teacher-{data.resolve().name}.npz"


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """File name -> embedding; empty when there is no cache yet."""
    if not path.exists():
        return {}
    with np.load(path) as stored:
        return dict(zip(stored["names"].tolist(), stored["embeddings"], strict=True))


def save_cache(path: Path, embeddings: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(embeddings)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        names=np.array(names),
        embeddings=np.stack([embeddings[name] for name in names]).astype(np.float32),
    )
    partial.replace(path)


def dlib_embedder() -> Embedder:
    """The dlib teacher: face box (the detector's, else most of the chip), 5 landmarks, an
    aligned 150-pixel chip, then the descriptor."""
    import dlib  # noqa: PLC0415 - optional: only this script needs it
    import face_recognition_models  # noqa: PLC0415

    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(
        face_recognition_models.pose_predictor_five_point_model_location()
    )
    descriptor = dlib.face_recognition_model_v1(
        face_recognition_models.face_recognition_model_location()
    )

    def embed(path: Path) -> np.ndarray:
        pixels = read_rgb(path)
        height, width = pixels.shape[:2]
        faces = detector(pixels, 0)
        box = (
            faces[0]
            if len(faces)
            else dlib.rectangle(
                round(0.075 * width),
                round(0.075 * height),
                round(0.97 * width),
                round(0.97 * height),
            )
        )
        chip = dlib.get_face_chip(pixels, landmarks(pixels, box), CHIP_SIZE, CHIP_PADDING)
        return np.asarray(descriptor.compute_face_descriptor(chip), dtype=np.float32)

    return embed


_worker_embedder: Embedder | None = None


def _embed_in_worker(path: Path) -> np.ndarray:
    global _worker_embedder
    if _worker_embedder is None:
        _worker_embedder = dlib_embedder()
    return _worker_embedder(path)


def embed_missing(
    paths: Sequence[Path],
    cache_file: Path,
    workers: int,
    embedder: Embedder | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of `paths` by file name, computing (and caching) the ones the cache lacks.

    `embedder` replaces the dlib teacher in one process (tests); otherwise `workers` processes
    run it.
    """
    embeddings = load_cache(cache_file)
    missing = [path for path in paths if path.name not in embeddings]
    print(f"teacher: {len(paths) - len(missing)} cached, {len(missing)} to compute", flush=True)
    started = time.monotonic()
    with _embeddings_of(missing, workers, embedder) as vectors:
        for done, (path, vector) in enumerate(zip(missing, vectors, strict=True), 1):
            embeddings[path.name] = vector
            if done % SAVE_EVERY == 0 or done == len(missing):
                save_cache(cache_file, embeddings)
                rate = done / (time.monotonic() - started)
                print(f"teacher: {done}/{len(missing)} ({rate:.1f} faces/s)", flush=True)
    return {path.name: embeddings[path.name] for path in paths}


@contextlib.contextmanager
def _embeddings_of(
    paths: Sequence[Path], workers: int, embedder: Embedder | None
) -> Iterator[Iterator[np.ndarray]]:
    """The embeddings of `paths` in order, lazily: by `embedder` in this process where given,
    else by the dlib teacher in a pool of `workers` processes."""
    if embedder is not None:
        yield map(embedder, paths)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield pool.imap(_embed_in_worker, paths, chunksize=16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    images, _ = scan_folder(args.data)
    train = stratified_split(images, SPLIT_FRACTIONS, seed=args.seed)["train"]
    embed_missing(
        [item.path for item in train], cache_path(args.cache_dir, args.data), args.workers
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
