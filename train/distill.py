"""Distillation from the face-recognition teacher (train/teacher.py) into a student's features.

The student gets an extra linear head on its pooled features that learns to point the way the
teacher's embedding of the same face points (cosine loss). The head exists only while training:
the served model is the student without it, so it costs nothing at inference.
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
