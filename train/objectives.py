"""What a model trains on, and the one way both scripts compile, feed and fit it."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import keras
import numpy as np

from train.augment import make_dataset
from train.common import TimeBudget, degradations_of, fit, optimizer
from train.distill import TEACHER_OUTPUT, teacher_embeddings, teacher_gender, with_teacher_head
from train.teacher import EMBEDDING_SIZE
from train.utkface import ArraySet


@dataclasses.dataclass
class Objectives:
    """Per output of the model: its loss, loss weight, targets and per-face weights."""

    losses: dict[str, Any]
    loss_weights: dict[str, float]
    metrics: dict[str, list[Any]]
    train_targets: dict[str, np.ndarray]
    train_weights: dict[str, np.ndarray]
    validation_targets: dict[str, np.ndarray]
    validation_weights: dict[str, np.ndarray] | None = None

    def add_teacher(self, embeddings: np.ndarray, weight: float, validation_size: int) -> None:
        """Learn the teacher's `embeddings` of the training faces with loss weight `weight`."""
        # Minus the cosine between the head's output and the teacher's embedding.
        self.losses[TEACHER_OUTPUT] = keras.losses.CosineSimilarity()
        self.loss_weights[TEACHER_OUTPUT] = weight
        self.train_targets[TEACHER_OUTPUT] = embeddings
        self.train_weights[TEACHER_OUTPUT] = np.ones(len(embeddings), np.float32)
        # The teacher embedded the training faces only: the validation loss leaves its head out.
        self.validation_targets[TEACHER_OUTPUT] = np.zeros(
            (validation_size, EMBEDDING_SIZE), np.float32
        )
        self.validation_weights = {
            name: np.full(validation_size, float(name != TEACHER_OUTPUT), np.float32)
            for name in self.validation_targets
        }

    def add_teacher_gender(self, female: np.ndarray, share: float) -> None:
        """Take `share` of each training face's gender target from the teacher's out-of-fold
        probability that it is female (`teacher_gender`) instead of its label."""
        teacher_targets = np.stack([1.0 - female, female], axis=1)
        self.train_targets["gender"] = (
            (1.0 - share) * self.train_targets["gender"] + share * teacher_targets
        ).astype(np.float32)


def train_model(
    model: keras.Model,
    args: argparse.Namespace,
    objectives: Objectives,
    train: ArraySet,
    validation: ArraySet,
) -> TimeBudget:
    """Compile and fit `model` (with the teacher's head while training, when asked) on the
    augmented training split; the budget says how many epochs ran."""
    training_model = model
    if args.distill_weight or args.teacher_gender_weight:
        embeddings = teacher_embeddings(args, train)  # read from the cache once for both lessons
    if args.teacher_gender_weight:
        female = teacher_gender(embeddings, train.genders, args.seed)
        objectives.add_teacher_gender(female, args.teacher_gender_weight)
    if args.distill_weight:
        objectives.add_teacher(embeddings, args.distill_weight, len(validation.names))
        training_model = with_teacher_head(model)
    training_model.compile(
        optimizer=optimizer(args, len(train.names)),
        loss=objectives.losses,
        loss_weights=objectives.loss_weights,
        metrics=objectives.metrics,
    )
    train_set = make_dataset(
        train.images,
        objectives.train_targets,
        batch_size=args.batch_size,
        training=True,
        seed=args.seed,
        augmentation=args.augment,
        degradations=degradations_of(args),
        sample_weights=objectives.train_weights,
    )
    validation_set = make_dataset(
        validation.images,
        objectives.validation_targets,
        batch_size=256,
        training=False,
        seed=args.seed,
        sample_weights=objectives.validation_weights,
    )
    return fit(training_model, args, train_set, validation_set)
