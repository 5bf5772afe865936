"""Distillation from the face-recognition teacher (train/teacher.py) into a student's features.

The student gets an extra linear head on its pooled features that learns to point the way the
teacher's embedding of the same face points (cosine loss). The head exists only while training:
the served model is the student without it, so it costs nothing at inference. Optionally
(`--teacher-gender-weight`) a share of each face's gender target comes from the teacher too:
an out-of-fold logistic regression on its embeddings (no gain so far: docs/models.md).
"""

from __future__ import annotations

import argparse

import keras
import numpy as np
from keras import layers

from train.teacher import EMBEDDING_SIZE, cache_path, load_cache
from train.utkface import ArraySet

TEACHER_OUTPUT = "teacher_embedding"


def with_teacher_head(model: keras.Model) -> keras.Model:
    """`model` plus a linear head from its pooled features to the teacher's embedding.

    The two models share their layers, so training this one trains `model`.
    """
    head = layers.Dense(EMBEDDING_SIZE, name=TEACHER_OUTPUT)(model.get_layer("pool").output)
    outputs = {name: model.get_layer(name).output for name in model.output_names}
    return keras.Model(
        model.inputs, {**outputs, TEACHER_OUTPUT: head}, name=f"{model.name}_distilled"
    )


def teacher_embeddings(args: argparse.Namespace, arrays: ArraySet) -> np.ndarray:
    """The teacher's embeddings of `arrays`' faces, row for row, from the cache train/teacher.py
    writes, centred on their mean; raises if any is missing.

    Centred, because dlib's descriptors all point nearly the same way (cosine 0.91 to their
    mean over UTKFace's training faces): a cosine loss on them would be mostly learnt by
    predicting that mean, leaving little of it to what tells faces apart.
    """
    cached = load_cache(cache_path(args.cache_dir, args.data))
    missing = [name for name in arrays.names if name not in cached]
    if missing:
        raise SystemExit(
            f"{len(missing)} training faces have no teacher embedding (first: {missing[0]}); "
            f"run `python -m train.teacher --data {args.data}` first"
        )
    embeddings = np.stack([cached[name] for name in arrays.names]).astype(np.float32)
    return embeddings - embeddings.mean(axis=0)


def teacher_gender(
    embeddings: np.ndarray, genders: np.ndarray, seed: int, folds: int = 5
) -> np.ndarray:
    """The probability that each face is female (the gender label 1) by a logistic regression on
    the teacher's `embeddings` of the faces, out of fold: each face's by a regression fitted
    without it, so that it carries what the teacher sees rather than the face's own label."""
    return out_of_fold_logistic(embeddings.astype(np.float64), genders, folds, seed)


def out_of_fold_logistic(
    features: np.ndarray, labels: np.ndarray, folds: int, seed: int
) -> np.ndarray:
    """P(label 1) for each row from a logistic regression fitted on the other folds' rows."""
    standardised = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-12)
    design = np.hstack([standardised, np.ones((len(features), 1))])
    fold_of = np.random.default_rng(seed).permutation(len(features)) % folds
    probabilities = np.empty(len(features))
    for fold in range(folds):
        held_out = fold_of == fold
        weights = fit_logistic(design[~held_out], labels[~held_out].astype(np.float64))
        probabilities[held_out] = _sigmoid(design[held_out] @ weights)
    return probabilities.astype(np.float32)


def fit_logistic(
    design: np.ndarray, labels: np.ndarray, penalty: float = 1.0, steps: int = 25
) -> np.ndarray:
    """Weights of an L2-penalised logistic regression, by Newton's method."""
    weights = np.zeros(design.shape[1])
    for _ in range(steps):
        predicted = _sigmoid(design @ weights)
        gradient = design.T @ (predicted - labels) + penalty * weights
        curvature = (design * (predicted * (1 - predicted))[:, None]).T @ design
        weights -= np.linalg.solve(curvature + penalty * np.eye(len(weights)), gradient)
    return weights


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
