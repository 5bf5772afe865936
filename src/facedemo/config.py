"""Service settings, read from FACEDEMO_* environment variables."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from facedemo.age_thresholds import (
    DEFAULT_AGE_THRESHOLDS,
    MAX_THRESHOLD,
    MAX_THRESHOLDS,
    MIN_THRESHOLD,
    thresholds_from,
)
from facedemo.detector_names import DEFAULT_DETECTOR, DetectorName

# src/facedemo/config.py -> the repository root holds models/ (an editable or source install).
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# Largest decoded image (width x height) by default; training and bench code read photos with it.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

Device = Literal["auto", "cpu", "gpu"]
LogLevel = Literal["debug", "info", "warning", "error"]


class Settings(BaseSettings):
    """Every knob of the service; each field is FACEDEMO_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="FACEDEMO_", extra="ignore", frozen=True)

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Folder of model bundles.")
    # NoDecode: parsed by `_parse_model_pins`, so that bad JSON is a validation error naming the
    # variable rather than pydantic-settings' SettingsError with a traceback.
    model_pins: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='Versions to load instead of the newest, as JSON: {"age-regressor": "1.0.0"}.',
    )
    host: str = Field("127.0.0.1", description="Address `facedemo serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `facedemo serve` listens on.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest accepted upload.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0, description="Largest decoded image (w*h)."
    )
    max_batch_images: int = Field(32, gt=0, description="Most images in one /predict/batch.")
    device: Device = Field("auto", description="auto: GPU if visible, else CPU; gpu: GPU or fail.")
    op_threads: int = Field(
        1,
        ge=0,
        description="CPU threads one TensorFlow operation may use; 0: one per core (TensorFlow's "
        "default). Concurrent requests keep the cores busy already.",
    )
    detector: DetectorName = Field(
        DEFAULT_DETECTOR,
        description="The face detector of detect=auto: retinaface (RetinaFace-MobileNet-0.25 in "
        "ONNX Runtime, on the CPU) or mtcnn (MTCNN in TensorFlow, on the models' device).",
    )
    detector_max_side: int | None = Field(
        None,
        ge=48,
        description="Images are shrunk to this longest side (px) before detection; unset: the "
        "detector's own (retinaface 1024, mtcnn 640).",
    )
    detector_min_face_size: int | None = Field(
        None,
        ge=8,
        description="Smallest face (px, in the shrunk image) the detector reports; unset: the "
        "detector's own (retinaface 8, mtcnn 20).",
    )
    detector_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Least detector confidence of a reported face, whatever its size; unset: the "
        "detector's own (retinaface 0.85 under 24 px, 0.8 above; mtcnn 0.95).",
    )
    max_faces_per_image: int = Field(
        50, gt=0, description="Most faces reported per image; the largest are kept."
    )
    max_batch_size: int = Field(
        32,
        ge=1,
        le=32,  # the registry's largest padded batch (registry.PADDED_BATCH_SIZES), all warmed
        description="Most faces in one model call of the dynamic batcher; 1 turns batching off.",
    )
    batch_timeout_ms: float = Field(
        5.0, ge=0, description="Longest wait of the oldest queued face for a fuller batch (ms)."
    )
    max_queue: int = Field(
        128,
        ge=1,
        description="Faces that may wait for the models, and images for a decoding thread; "
        "beyond, 503 overloaded with Retry-After.",
    )
    request_timeout_ms: float = Field(
        10_000,
        gt=0,
        description="Longest time for a request's work (decoding, detection, models), from the "
        "end of its upload; beyond, 503 deadline_exceeded.",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Most open client connections of one server process; a new one beyond it "
        "closes the connection idle longest (or, when every one is busy, is itself closed).",
    )
    keepalive_timeout_seconds: float = Field(
        5.0, gt=0, description="A kept-alive connection idle this long between requests is closed."
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Longest time to receive a request's line and headers, from the connection's "
        "start or the previous response; beyond, the connection is closed (408).",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="Longest time to receive a request's body once its headers are in; beyond, "
        "408 and the connection is closed.",
    )
    max_header_bytes: int = Field(
        65536, ge=1024, description="Most bytes of a request's line and headers; beyond, 431."
    )
    memory_budget_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Bytes that uploads being received or held, and images being decoded, may "
        "take at once; new work beyond it gets 503 overloaded with Retry-After.",
    )
    max_decode_bytes: int = Field(
        440_000_000,
        gt=0,
        description="Most memory one image's decoding may take, priced from its header (pixels, "
        "bit depth, bands) before decoding; beyond, 413 image_too_expensive. The default decodes "
        "an 8-bit RGB image of the default pixel limit.",
    )
    heavy_decode_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Images whose decoding is priced above this are heavy: they decode in their "
        "own threads (half the cores), so that they cannot starve cheap requests.",
    )
    age_thresholds: Annotated[tuple[int, ...], NoDecode] = Field(
        DEFAULT_AGE_THRESHOLDS,
        description="Comma-separated ages T: every face's `age.over` holds P(age >= T) for each, "
        f"unless the request asks for its own (`age_over`); {MIN_THRESHOLD}-{MAX_THRESHOLD}, at "
        f"most {MAX_THRESHOLDS}; empty: none.",
    )
    log_level: LogLevel = Field("info", description="Log level of the service.")
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="Comma-separated API keys, sent as X-API-Key or Authorization: Bearer; "
        "unset or empty: no key needed (local use). A value that holds no key (' , ') is refused.",
    )
    api_keys_protect_docs: bool = Field(
        True, description="With API keys set: /docs, /redoc, /openapi.json, / and /static need one."
    )
    api_keys_protect_metrics: bool = Field(
        True, description="With API keys set: /metrics needs one."
    )
    shutdown_timeout_seconds: int = Field(
        25,
        ge=1,
        description="After SIGTERM, how long in-flight requests may finish before they are "
        "cancelled (below Kubernetes' default 30 s grace period).",
    )

    @field_validator("model_pins", mode="before")
    @classmethod
    def _parse_model_pins(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as error:
            raise ValueError(
                f"not JSON ({error.msg} at character {error.pos + 1}); expected an object such "
                'as {"age-regressor": "1.0.0"}'
            ) from None

    @field_validator("age_thresholds", mode="before")
    @classmethod
    def _split_age_thresholds(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError(
                    f"expected whole years separated by commas, such as 13,16,18, got {value!r}"
                ) from None
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            return thresholds_from(value)
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        # The environment gives one comma-separated string; blanks around keys are dropped.
        if value == "":
            return ()  # set but empty, as in `docker run -e FACEDEMO_API_KEYS=`: no keys
        if not isinstance(value, str):
            return value
        keys = tuple(key.strip() for key in value.split(",") if key.strip())
        if not keys:
            # Set but holding no key (" , ", a template that rendered nothing): starting open
            # would silently turn authentication off.
            raise ValueError(
                "holds no key, only commas or blanks; list keys separated by commas, or leave "
                "it unset (or empty) to run without authentication"
            )
        return keys


def describe_invalid_settings(error: ValidationError) -> list[str]:
    """One line per invalid setting: the variable, where in its value, and what is wrong.

    The values themselves are left out: one of them may be an API key.
    """
    prefix = Settings.model_config.get("env_prefix", "")
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        field, *inside = problem["loc"] or ("?",)
        variable = f"{prefix}{str(field).upper()}"
        where = f" (at {'.'.join(map(str, inside))})" if inside else ""
        context = problem.get("ctx") or {}
        # A validator's ValueError reads "Value error, <message>"; the message alone is clearer.
        message = str(context["error"]) if problem["type"] == "value_error" else problem["msg"]
        lines.append(f"{variable}{where}: {message}")
    return lines


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
