"""The exception tree of facedemo; it knows no HTTP: `api/problems.py` gives each its status.

    FacedemoError                      code
    ├── InputError                     bad_input
    │   ├── ImageDecodeError           image_undecodable
    │   │   ├── EmptyUpload            empty_file
    │   │   ├── ImageTruncated         image_truncated
    │   │   └── ImageCorrupt           image_corrupt
    │   ├── UnsupportedImageFormat     unsupported_image_format
    │   ├── ImageTooLarge              image_too_large
    │   ├── ImageTooExpensive          image_too_expensive
    │   ├── UploadTooLarge             upload_too_large
    │   ├── TooManyFiles               too_many_files
    │   ├── UnsupportedMediaType       unsupported_media_type
    │   └── MalformedMultipart         malformed_multipart
    ├── ModelError                     model_error
    │   ├── BundleError                bad_bundle
    │   ├── UnknownModelError          unknown_model
    │   └── DeviceUnavailableError     device_unavailable
    ├── NotReadyError                  not_ready
    ├── OverloadedError                overloaded
    │   └── DeadlineExceededError      deadline_exceeded
    └── AuthenticationError            unauthorized

Each class carries a stable `code` (clients branch on it) and a `title`; an error with a
`retry_after` (seconds) says how long a client should wait before trying again.
"""

from __future__ import annotations

from collections.abc import Iterable


class FacedemoError(Exception):
    """Base of every error facedemo raises on purpose."""

    code = "facedemo_error"
    title = "Internal error"
    retry_after: int | None = None  # seconds a client should wait before trying again

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InputError(FacedemoError):
    """The request's data is unusable."""

    code = "bad_input"
    title = "Bad input"


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


class ImageTooLarge(InputError):
    """More pixels than the configured limit (decompression bombs land here)."""

    code = "image_too_large"
    title = "Image has too many pixels"


class ImageTooExpensive(InputError):
    """Decoding would take more memory than the configured limit (pixels times bit depth and
    bands, priced from the header before decoding)."""

    code = "image_too_expensive"
    title = "Image too expensive to decode"


class UploadTooLarge(InputError):
    """More bytes than the configured upload limit."""

    code = "upload_too_large"
    title = "Upload too large"


class TooManyFiles(InputError):
    """More files than the route takes: a second `file` in /predict, or too many in a batch."""

    code = "too_many_files"
    title = "Too many files"


class UnsupportedMediaType(InputError):
    """The request body is not multipart/form-data where an upload is expected (JSON, text...)."""

    code = "unsupported_media_type"
    title = "Unsupported media type"


class MalformedMultipart(InputError):
    """A multipart/form-data body that cannot be parsed (no boundary, broken framing, ...)."""

    code = "malformed_multipart"
    title = "Malformed multipart body"


class ModelError(FacedemoError):
    """Something is wrong on the model side."""

    code = "model_error"
    title = "Model error"


class BundleError(ModelError):
    """A model bundle on disk is missing, incomplete, tampered with or inconsistent."""

    code = "bad_bundle"
    title = "Model bundle is unusable"


class UnknownModelError(ModelError):
    """A model name that is not loaded; the message lists the known names."""

    code = "unknown_model"
    title = "Unknown model"

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


class NotReadyError(FacedemoError):
    """The service has no usable models yet (still loading, or loading failed)."""

    code = "not_ready"
    title = "Service not ready"


class OverloadedError(FacedemoError):
    """The models' queue is full (FACEDEMO_MAX_QUEUE faces wait): try again after `retry_after`."""

    code = "overloaded"
    title = "Service overloaded"

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
