"""The exception tree of facedemo. `api/problems.py` is the one place that maps it to HTTP.

    FacedemoError                      code                     HTTP
    ├── InputError                     bad_input                400
    │   ├── ImageDecodeError           image_undecodable        400
    │   │   ├── EmptyUpload            empty_file               400
    │   │   ├── ImageTruncated         image_truncated          400
    │   │   └── ImageCorrupt           image_corrupt            400
    │   ├── UnsupportedImageFormat     unsupported_image_format 415
    │   ├── ImageTooLarge              image_too_large          413
    │   ├── ImageTooExpensive          image_too_expensive      413
    │   ├── UploadTooLarge             upload_too_large         413
    │   ├── TooManyFiles               too_many_files           413
    │   ├── UnsupportedMediaType       unsupported_media_type   415
    │   └── MalformedMultipart         malformed_multipart      400
    ├── ModelError                     model_error              500
    │   ├── BundleError                bad_bundle               503
    │   ├── UnknownModelError          unknown_model            404
    │   └── DeviceUnavailableError     device_unavailable       503
    ├── NotReadyError                  not_ready                503
    ├── OverloadedError                overloaded               503  + Retry-After
    │   └── DeadlineExceededError      deadline_exceeded        503  + Retry-After
    └── AuthenticationError            unauthorized             401

Each class carries a stable `code` (clients branch on it), a `title` and the HTTP `status`; an
error with a `retry_after` (seconds) is answered with a `Retry-After` header.
"""

from __future__ import annotations

from collections.abc import Iterable


class FacedemoError(Exception):
    """Base of every error facedemo raises on purpose."""

    code = "facedemo_error"
    title = "Internal error"
    status = 500
    retry_after: int | None = None  # seconds a client should wait before trying again

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InputError(FacedemoError):
    """The request's data is unusable."""

    code = "bad_input"
    title = "Bad input"
    status = 400


class ImageDecodeError(InputError):
    """The bytes are not a readable image (corrupt, truncated, not an image)."""

    code = "image_undecodable"
    title = "Image could not be decoded"


class EmptyUpload(ImageDecodeError):
    """The upload has no bytes at all."""

    code = "empty_file"
    title = "Empty upload"


class ImageTruncated(ImageDecodeError):
    """The image's data stops before all of its pixels (a cut-off upload): nothing to predict on."""

    code = "image_truncated"
    title = "Image data is truncated"


class ImageCorrupt(ImageDecodeError):
    """The image's compressed data is damaged (a checksum or the entropy-coded data is wrong)."""

    code = "image_corrupt"
    title = "Image data is corrupt"


class UnsupportedImageFormat(InputError):
    """A real format, but not one on the allow-list (SVG, PDF, EPS, ICO, TGA, PCX, ...)."""

    code = "unsupported_image_format"
    title = "Unsupported image format"
    status = 415


class ImageTooLarge(InputError):
    """More pixels than the configured limit (decompression bombs land here)."""

    code = "image_too_large"
    title = "Image has too many pixels"
    status = 413


class ImageTooExpensive(InputError):
    """Decoding would take more memory than the configured limit (pixels times bit depth and
    bands, priced from the header before decoding)."""

    code = "image_too_expensive"
    title = "Image too expensive to decode"
    status = 413


class UploadTooLarge(InputError):
    """More bytes than the configured upload limit."""

    code = "upload_too_large"
    title = "Upload too large"
    status = 413


class TooManyFiles(InputError):
    """More files than the route takes: a second `file` in /predict, or too many in a batch."""

    code = "too_many_files"
    title = "Too many files"
    status = 413


class UnsupportedMediaType(InputError):
    """The request body is not multipart/form-data where an upload is expected (JSON, text...)."""

    code = "unsupported_media_type"
    title = "Unsupported media type"
    status = 415


class MalformedMultipart(InputError):
    """A multipart/form-data body that cannot be parsed (no boundary, broken framing, ...)."""

    code = "malformed_multipart"
    title = "Malformed multipart body"


class ModelError(FacedemoError):
    """Something is wrong on the model side."""

    code = "model_error"
    title = "Model error"
    status = 500


class BundleError(ModelError):
    """A model bundle on disk is missing, incomplete, tampered with or inconsistent."""

    code = "bad_bundle"
    title = "Model bundle is unusable"
    status = 503


class UnknownModelError(ModelError):
    """A model name that is not loaded; the message lists the known names."""

    code = "unknown_model"
    title = "Unknown model"
    status = 404

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known_names = sorted(known)
        super().__init__(
            f"no model named {name!r}; known models: {', '.join(known_names) or 'none'}"
        )
        self.name = name
        self.known = known_names


class DeviceUnavailableError(ModelError):
    """The configured device (e.g. FACEDEMO_DEVICE=gpu) is not available."""

    code = "device_unavailable"
    title = "Requested device is not available"
    status = 503


class NotReadyError(FacedemoError):
    """The service has no usable models yet (still loading, or loading failed)."""

    code = "not_ready"
    title = "Service not ready"
    status = 503


class OverloadedError(FacedemoError):
    """The models' queue is full (FACEDEMO_MAX_QUEUE faces wait): try again after `retry_after`."""

    code = "overloaded"
    title = "Service overloaded"
    status = 503

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class DeadlineExceededError(OverloadedError):
    """The request's faces did not reach the models within FACEDEMO_REQUEST_TIMEOUT_MS."""

    code = "deadline_exceeded"
    title = "Request deadline exceeded"


class AuthenticationError(FacedemoError):
    """API keys are configured and the request carries none of them."""

    code = "unauthorized"
    title = "Missing or invalid API key"
    status = 401
