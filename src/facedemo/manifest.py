"""The model bundle format: `models/<name>/<version>/{model.keras, manifest.json, MODEL_CARD.md}`.

The training scripts write a `Manifest`; the registry reads and checks one. Both sides use these
pydantic models, so the format is defined in exactly one place.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
BUNDLE_FILES = (MODEL_FILE, MANIFEST_FILE, MODEL_CARD_FILE)

CLASSIFIER_NAME = "age-gender-classifier"
REGRESSOR_NAME = "age-regressor"

AGE_BUCKET_LABELS = ("0-24", "25-49", "50-74", "75-99", "100-124")
GENDER_LABELS = ("male", "female")

Task = Literal["age-gender-classification", "age-regression"]


class InputSpec(BaseModel):
    """What the model expects: RGB uint8 values as float32 in [0, 255]; it rescales internally."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    color_order: Literal["RGB"] = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    crop: str = Field(
        default="utkface-aligned",
        description="Face geometry the model was trained on (UTKFace aligned-and-cropped chips).",
    )


class OutputSpec(BaseModel):
    """One named output of the Keras model."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["probabilities", "logits"]
    labels: list[str] = Field(description="One label per output unit, in order.")


class Calibration(BaseModel):
    """How the regressor's age distribution becomes an interval."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(gt=0, description="Logits are divided by this before softmax.")
    age_exponent: float = Field(
        default=0.0,
        ge=0,
        description="The temperature grows as ((1 + age) / 26) ** this with the age the head "
        "gives a face (facedemo.age_distribution.head_temperatures); 0: one temperature.",
    )
    interval_level: float = Field(gt=0, lt=1, description="Central interval probability, e.g. 0.8.")
    fitted_on: str = Field(description="Which split the temperature was fitted on.")


class Manifest(BaseModel):
    """manifest.json of one bundle."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: Literal[1] = 1
    name: str
    version: str = Field(pattern=r"^\d+(\.\d+)*$")
    task: Task
    created: str = Field(description="ISO 8601 UTC time the bundle was written.")
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    outputs: dict[str, OutputSpec]
    calibration: Calibration | None = None
    parameters: int = Field(ge=0)
    flops_per_face: int | None = Field(default=None, ge=0)
    training: dict[str, Any] = Field(
        description="Data, data checksum, split sizes and seed, config, command and wall time."
    )
    metrics: dict[str, Any] = Field(description="Validation metrics, overall and per group.")


def age_bucket(age: float) -> int:
    """Index into AGE_BUCKET_LABELS: `age // 25`, capped at the last bucket."""
    return min(max(int(age), 0) // 25, len(AGE_BUCKET_LABELS) - 1)


def version_key(version: str) -> tuple[int, ...]:
    """Sort key so that "1.10" is newer than "1.9"."""
    return tuple(int(part) for part in version.split("."))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
