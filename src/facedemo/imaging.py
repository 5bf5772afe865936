"""Decode and normalise uploaded images. The only module that opens images with Pillow.

`decode_image` turns untrusted bytes into an RGB uint8 array or raises one of the typed errors in
`facedemo.errors`; nothing else escapes it. Only the formats in `ACCEPTED_FORMATS` are ever
parsed (the other formats Pillow knows are recognised by their signature and refused unparsed),
the pixel limit and the decoding's memory price (`price_image`) are checked from the header
before any pixel is decoded, JPEG and PNG data is checked to be whole and intact before Pillow
decodes it (Pillow fills what is missing and says nothing), and the bytes stay in memory.
Decodes run in parallel: nothing here holds a lock or changes process state while decoding.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin

from facedemo.errors import (
    EmptyUpload,
    FacedemoError,
    ImageCorrupt,
    ImageDecodeError,
    ImageTooExpensive,
    ImageTooLarge,
    ImageTruncated,
    UnsupportedImageFormat,
)

# The one list of accepted formats: Pillow's name -> the name users read. The check, the 415
# problem's detail, the OpenAPI text and the README all come from here.
ACCEPTED_FORMATS = {
    "JPEG": "JPEG",
    "PNG": "PNG",
    "WEBP": "WebP",
    "BMP": "BMP",
    "GIF": "GIF",
    "TIFF": "TIFF",
}
ALLOWED_FORMATS = tuple(ACCEPTED_FORMATS)
ACCEPTED_FORMAT_NAMES = (
    f"{', '.join(list(ACCEPTED_FORMATS.values())[:-1])} or {list(ACCEPTED_FORMATS.values())[-1]}"
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Real formats that are not on the allow-list, recognised so the client hears 415, not 400.
_REFUSED_SIGNATURES = (
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_MARKUP_PREFIXES = (b"<?xml", b"<svg", b"<!doctype svg")
_TGA_FOOTER = b"TRUEVISION-XFILE.\x00"
# Pillow's plugins recognise their formats from the first 16 bytes (Image.open reads as many).
_SIGNATURE_BYTES = 16
# Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7's passes: first column, first row, column step, row step.
_ADAM7_PASSES = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_CHUNK = 1 << 20  # bytes inflated at a time by the PNG length check
# libjpeg's warning for bytes it skipped to find the next marker (jdmarker.c, JWRN_EXTRANEOUS_DATA).
_STRAY_BYTES = re.compile(r"Corrupt JPEG data: (\d+) extraneous bytes before marker 0x(\w\w)")
_TRUNCATED = "the image data is truncated: it stops before the last pixel"
# JPEGs that simplejpeg decodes to RGB with exactly Pillow's pixels (the same libjpeg-turbo, slow
# integer IDCT, fancy upsampling): checked equal on 4,097 UTKFace and WIDER FACE photos.
_FAST_JPEG_MODES = ("RGB", "L")
_TURNING_ORIENTATIONS = range(2, 9)  # EXIF orientations 2..8 mirror or turn the image
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

# Rows of a high-bit-depth image scaled to 8 bits at a time: float64 temporaries of ~8 MB, not of
# the whole image (three of 300 MB each for 40 MP).
_SCALE_BLOCK_PIXELS = 1 << 20

# Pillow's warnings (odd EXIF, palette quirks, its decompression-bomb warning, which the explicit
# pixel checks below turn into ImageTooLarge) are not a caller's business. Filtered once, for the
# process: warnings.catch_warnings around each decode swaps process-wide state, which is not
# thread-safe and would force one decode at a time.
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Bytes a pixel of each Pillow mode takes at the peak of `_decode` (Pillow's own image, which
# stores 3 bands in 4 bytes; `tobytes`' chunks and their join; the conversion to RGB and the
# final array), measured with `python -m bench.decode_cost` and rounded up; modes not listed,
# and transparent images, are converted through RGBA.
_PEAK_BYTES_PER_PIXEL = {
    "1": 12,
    "L": 12,
    "P": 12,
    "RGB": 11,
    "I;16": 9,
    "I;16L": 9,
    "I;16B": 9,
    "I;16N": 9,
    "I": 13,
    "F": 13,
}
_TRANSPARENT_BYTES_PER_PIXEL = 20  # an RGBA copy, a white background, the composite, RGB


class _TruncationTrackingStream(io.BytesIO):
    """The upload as a stream that notes when a decoder asks for bytes beyond its end.

    Pillow raises on truncated data only while the process-wide ImageFile.LOAD_TRUNCATED_IMAGES is
    False; anything in the process may set it, so the decoder watches for running out itself.
    """

    ran_out = False

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data  # the upload itself, for the checks that read it whole

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk and size is not None and size > 0:
            self.ran_out = True
        return chunk


def decode_image(
    data: bytes, *, max_pixels: int, max_decode_bytes: int | None = None
) -> np.ndarray:
    """Decode an uploaded image into an RGB uint8 array of shape (height, width, 3).

    EXIF orientation is applied, multi-frame images give their first frame, transparency is
    composited on white and high bit depths are scaled (not clipped) to 0..255. Raises
    ImageDecodeError (not a readable image; its subclasses EmptyUpload for zero bytes,
    ImageTruncated for data that stops before the last pixel, ImageCorrupt for damaged data),
    UnsupportedImageFormat (a format off the allow-list), ImageTooLarge (more than
    `max_pixels` pixels) or ImageTooExpensive (decoding priced above `max_decode_bytes`), the
    last two checked from the header, before decoding.
    """
    _check_bytes(data, max_pixels)
    return _guarded(_decode, data, max_pixels, max_decode_bytes, None).pixels


@dataclass(frozen=True)
class ImagePrice:
    """What decoding an image will cost, read from its header: the decoder's own figures.

    `decoded_width` x `decoded_height` are the pixels the decoder will produce (fewer than
    `width` x `height` for a JPEG decoded at a reduced DCT scale); `decode_bytes` is the memory
    decoding them takes at its peak, from those pixels and the mode's bit depth and bands. Only
    the first frame of a multi-frame image is ever decoded, so the others cost nothing.
    """

    format: str
    mode: str
    width: int
    height: int
    decoded_width: int
    decoded_height: int
    decode_bytes: int


def price_image(
    data: bytes,
    *,
    max_pixels: int,
    max_decode_bytes: int | None = None,
    longest_side: int | None = None,
) -> ImagePrice:
    """Price decoding `data` (with `decode_reduced`'s reduction when `longest_side` is given)
    from its header alone, with the checks and errors of `decode_image`, bar those that only a
    full decode finds (corrupt or truncated pixel data)."""
    _check_bytes(data, max_pixels)
    return _guarded(_price_only, data, max_pixels, max_decode_bytes, longest_side)


@dataclass(frozen=True)
class ReducedImage:
    """A decoded image whose pixels may be fewer than its size: (width, height) is the size of
    the whole (EXIF-rotated) image, `pixels` the RGB uint8 array decoded from it."""

    pixels: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """Pixels of the whole image per pixel of `pixels`, along x and along y."""
        return self.width / self.pixels.shape[1], self.height / self.pixels.shape[0]


def decode_reduced(
    data: bytes, *, max_pixels: int, longest_side: int, max_decode_bytes: int | None = None
) -> ReducedImage:
    """`decode_image`, but a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8)
    that keeps its longer side at `longest_side` pixels or more (Pillow's draft mode).

    Decoding at a quarter of the pixels takes about a quarter of the time, and the array is
    smaller to convert, resize and crop. Other formats, and JPEGs too small to reduce, decode
    whole. The pixel limit applies to the whole image, the price to the pixels decoded, and the
    errors are decode_image's.
    """
    if longest_side < 1:
        raise ValueError(f"longest_side must be positive, got {longest_side}")
    _check_bytes(data, max_pixels)
    return _guarded(_decode, data, max_pixels, max_decode_bytes, longest_side)


def _check_bytes(data: bytes, max_pixels: int) -> None:
    """The checks made on the bytes alone, before Pillow sees them."""
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not data:
        raise EmptyUpload("the upload is empty (zero bytes)")
    refused = _refused_format_name(data)
    if refused is not None:
        raise UnsupportedImageFormat(
            f"{refused} is not an accepted image format; send {ACCEPTED_FORMAT_NAMES}"
        )
    if data.startswith(_PNG_SIGNATURE):
        _check_png_checksums(data)


Result = TypeVar("Result")


def _guarded(
    step: Callable[[_TruncationTrackingStream, Image.Image, ImagePrice], Result],
    data: bytes,
    max_pixels: int,
    max_decode_bytes: int | None,
    longest_side: int | None,
) -> Result:
    """Open `data`, price it, check the limits, then `step`; Pillow's errors mapped to ours."""
    try:
        stream = _TruncationTrackingStream(data)
        with Image.open(stream, formats=ALLOWED_FORMATS) as image:
            price = _price(image, max_pixels, longest_side)
            if max_decode_bytes is not None and price.decode_bytes > max_decode_bytes:
                raise ImageTooExpensive(
                    f"decoding this {price.decoded_width}x{price.decoded_height} {price.format} "
                    f"image (mode {price.mode}) would take {price.decode_bytes} bytes of "
                    f"memory; the limit is {max_decode_bytes}"
                )
            return step(stream, image, price)
    except FacedemoError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's own process-wide guard tripped first: an outer limit, reported the same way.
        raise ImageTooLarge("the image declares too many pixels to decode safely") from error
    except Exception as error:
        if (isinstance(error, OSError) and "truncated" in str(error).lower()) or _short_webp(data):
            # Pillow's words when the data ran out (while LOAD_TRUNCATED_IMAGES is False), or a
            # WebP shorter than its RIFF header says, which libwebp only calls unreadable.
            raise ImageTruncated(_TRUNCATED) from error
        # Pillow's plugins answer malformed input with a wide, undocumented spread of
        # exceptions (OSError, SyntaxError, struct.error, IndexError, ZeroDivisionError...).
        detail = f"the upload is not a readable {ACCEPTED_FORMAT_NAMES} image"
        raise ImageDecodeError(detail) from error


def _price(image: Image.Image, max_pixels: int, longest_side: int | None) -> ImagePrice:
    """The price of the lazily opened `image`; sets up its JPEG reduction when asked to."""
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError("the image has no pixels")
    # Pillow's process-wide guard (Image.MAX_IMAGE_PIXELS) is an outer limit, applied here
    # rather than through its warning, which the module filters.
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {limit}"
        )
    if longest_side is not None and image.format == "JPEG" and max(width, height) > longest_side:
        # Pillow picks the smallest scale that keeps both sides at least the requested ones.
        longest = max(width, height)
        requested = (width * longest_side // longest, height * longest_side // longest)
        image.draft(image.mode, (max(1, requested[0]), max(1, requested[1])))
    decoded_width, decoded_height = image.size
    if image.mode in _PEAK_BYTES_PER_PIXEL and not image.has_transparency_data:
        per_pixel = _PEAK_BYTES_PER_PIXEL[image.mode]
    else:
        per_pixel = _TRANSPARENT_BYTES_PER_PIXEL
    return ImagePrice(
        format=str(image.format),
        mode=image.mode,
        width=width,
        height=height,
        decoded_width=decoded_width,
        decoded_height=decoded_height,
        decode_bytes=decoded_width * decoded_height * per_pixel,
    )


def _price_only(
    stream: _TruncationTrackingStream, image: Image.Image, price: ImagePrice
) -> ImagePrice:
    return price


def _decode(
    stream: _TruncationTrackingStream, image: Image.Image, price: ImagePrice
) -> ReducedImage:
    width, height = price.width, price.height
    # Pillow fills what a JPEG or a PNG lacks with grey or black and says nothing: checked first.
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        if image.mode in _FAST_JPEG_MODES and image.size == (width, height) and _upright(image):
            # The strict decode is the check and the pixels at once (the same libjpeg-turbo
            # decoder and settings as Pillow's: the same pixels, in half the time).
            pixels = _strict_jpeg_pixels(stream.data, "RGB")
            if pixels is not None:
                return ReducedImage(pixels=pixels, width=width, height=height)
        else:
            _strict_jpeg_pixels(stream.data, "CMYK" if image.mode == "CMYK" else "GRAY")
    elif image.format == "PNG":
        _check_png_length(stream.data)
    stream.ran_out = False
    image.load()  # Image.open is lazy: only a full load shows corrupt or truncated data
    if stream.ran_out:
        raise ImageTruncated(_TRUNCATED)
    stored = image.size
    # In place: exif_transpose would copy an image that needs no turn.
    ImageOps.exif_transpose(image, in_place=True)
    if image.size != stored:  # turned a quarter: the whole image's sides swap too
        width, height = height, width
    return ReducedImage(pixels=_to_rgb_array(image), width=width, height=height)


def _refused_format_name(data: bytes) -> str | None:
    """The name of the format off the allow-list that `data` is written in, if it is one."""
    for signature, name in _REFUSED_SIGNATURES:
        if data.startswith(signature):
            return name
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    head = data[:256].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(_MARKUP_PREFIXES):
        return "SVG/XML"
    if data.endswith(_TGA_FOOTER):  # TGA 2.0's footer; TGA has no signature at the start
        return "TGA (Targa)"
    prefix = data[:_SIGNATURE_BYTES]
    if any(_accepts(name, prefix) for name in ALLOWED_FORMATS):
        return None
    # Pillow's other plugins are asked only whether the signature is theirs (a test of a few
    # bytes), never to parse: their parsers stay as unreachable as their decoders.
    for name in Image.ID:
        if name not in ACCEPTED_FORMATS and _accepts(name, prefix):
            factory = Image.OPEN[name][0]
            description = getattr(factory, "format_description", None)
            return f"{name} ({description})" if description else name
    if _looks_like_tga(data):
        return "TGA (Targa)"
    return None


def _looks_like_tga(data: bytes) -> bool:
    """An older TGA, without the footer: the header's fields all hold values TGA defines."""
    if len(data) < 18:
        return False
    colour_map, image_type, depth = data[1], data[2], data[16]
    mapped = image_type in (1, 9)
    return (
        image_type in (1, 2, 3, 9, 10, 11)
        and colour_map == int(mapped)
        and depth in (8, 15, 16, 24, 32)
    )


def _short_webp(data: bytes) -> bool:
    declared = int.from_bytes(data[4:8], "little") + 8
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) < declared


def _accepts(name: str, prefix: bytes) -> bool:
    """Whether Pillow's plugin for format `name` takes `prefix` for the start of its format."""
    accept = Image.OPEN.get(name, (None, None))[1]
    if accept is None:
        return False
    try:
        return bool(accept(prefix))
    except (IndexError, TypeError, ValueError, struct.error):  # a prefix too short for the test
        return False


def _strict_jpeg_pixels(data: bytes, colour_space: str) -> np.ndarray | None:
    """The JPEG's pixels in `colour_space`, decoded strictly; ImageTruncated or ImageCorrupt when
    its entropy-coded data stops short or is damaged; None when it holds only stray bytes.

    libjpeg recovers from damage with a warning (grey or smeared pixels for the rest), which
    Pillow drops; libjpeg-turbo through simplejpeg's strict mode turns each warning into an
    error. Where Pillow still has to decode (a reduced scale, a turn, CMYK), the check decodes to
    grey at full scale, the cheapest way to read all the data (the SIMD IDCT beats the scaled
    ones): about a fifth of Pillow's decode (`python -m bench.bad_images`), one byte a pixel,
    dropped before Pillow allocates its own, so the price stands. An image with stray bytes is
    left to Pillow, which decodes it whole (`_stray_bytes_only`).
    """
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colour_space, strict=True)
    except ValueError as error:
        reason = str(error).rstrip(".")
        if _stray_bytes_only(reason, len(data)):
            return None
        if "premature end" in reason.lower():
            raise ImageTruncated(
                f"the JPEG data is truncated: it stops before the last pixel ({reason})"
            ) from error
        raise ImageCorrupt(f"the JPEG data is corrupt ({reason})") from error


def _upright(image: Image.Image) -> bool:
    """Whether the image's EXIF orientation (if any) asks for no turn or mirror."""
    return image.getexif().get(ExifTags.Base.Orientation) not in _TURNING_ORIENTATIONS


def _stray_bytes_only(reason: str, size: int) -> bool:
    """Whether libjpeg's warning is about a few stray bytes, with every pixel still decoded.

    Some cameras and editors leave bytes between segments or pad the last scan; libjpeg skips
    them, and browsers and Pillow show the image whole, so they are let be (strict mode stops at
    this first warning, so the rest goes unchecked, as before). Damaged scan data shows the same
    warning before the end marker, but with much of the scan left unread: more than a tenth of
    the file is taken for damage.
    """
    stray = _STRAY_BYTES.fullmatch(reason)
    if stray is None:
        return False
    count, marker = int(stray[1]), stray[2].lower()
    return marker != "d9" or count * 10 <= size


def _check_png_length(data: bytes) -> None:
    """Refuse a PNG whose compressed data holds fewer rows than its header declares.

    Pillow stops quietly where the zlib stream ends and leaves the other rows black, so a
    6000x6000 header over three rows would be predicted on. The stream is inflated a block at
    a time and only counted, up to the rows' length; more data than that is let be, as Pillow
    lets it be.
    """
    header = data[16:29]
    if data[12:16] != b"IHDR" or len(header) < 13:
        return  # not a PNG Pillow opened as such: it failed already
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    bits_per_pixel = _PNG_CHANNELS.get(colour_type, 1) * bit_depth
    if interlace:
        passes = [
            (-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7_PASSES
        ]
    else:
        passes = [(width, height)]
    expected = sum(
        rows * (1 + -(-columns * bits_per_pixel // 8))
        for columns, rows in passes
        if columns > 0 and rows > 0
    )
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for payload in _png_chunks(data, b"IDAT"):
            pending: bytes | memoryview = payload
            while pending and produced < expected:
                produced += len(inflater.decompress(pending, _INFLATE_CHUNK))
                pending = inflater.unconsumed_tail
        if produced < expected:
            produced += len(inflater.flush())  # the few bytes a full output block held back
    except zlib.error as error:
        raise ImageCorrupt("the PNG data is corrupt (its compressed data is damaged)") from error
    if produced < expected:
        raise ImageTruncated(
            f"the PNG data is truncated: it holds {produced} of the {expected} bytes of rows "
            "its header declares"
        )


def _png_chunks(data: bytes, chunk_type: bytes) -> Iterator[memoryview]:
    """The payloads of the `chunk_type` chunks of a PNG, without copying them."""
    view = memoryview(data)
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        if data[position + 4 : position + 8] == chunk_type:
            yield view[position + 8 : position + 8 + length]
        position += 12 + length


def _check_png_checksums(data: bytes) -> None:
    # Pillow checks the CRCs of header chunks only and accepts a file that stops before IEND, so a
    # corrupted IDAT or a cut-off file would decode silently; the chunk walk is cheap next to zlib.
    position = len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        end = position + 8 + length
        if end + 4 > len(data):
            break
        if zlib.crc32(data[position + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            raise ImageCorrupt("the PNG data is corrupt (a chunk checksum does not match)")
        if data[position + 4 : position + 8] == b"IEND":
            return
        position = end + 4
    raise ImageTruncated("the PNG data is truncated: it stops before its IEND chunk")


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in (*_SIXTEEN_BIT_MODES, "I", "F"):
        gray = _scale_to_uint8(np.asarray(image), image.mode)
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    if image.has_transparency_data:
        # Dropping alpha would turn transparent areas black (their stored colour); a face photo
        # with a transparent background reads more naturally on white.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    else:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.array(rgb, dtype=np.uint8)


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer or float grey levels to 0..255 without clipping.

    16-bit modes use their full 0..65535 scale; 32-bit integers use it too when they fit in it, as
    16-bit PNG and TIFF data read that way does; floats in 0..1 use that scale. Anything else is
    stretched from its own minimum to its maximum.
    """
    flat = values.reshape(-1)
    blocks = [
        slice(start, start + _SCALE_BLOCK_PIXELS)
        for start in range(0, flat.size, _SCALE_BLOCK_PIXELS)
    ]
    low, high = np.inf, -np.inf
    for block in blocks:
        levels = _finite_levels(flat[block])
        low, high = min(low, float(levels.min())), max(high, float(levels.max()))
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and low >= 0 and high <= 65535):
        low, high = 0.0, 65535.0
    elif mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    scaled = np.empty(flat.size, dtype=np.uint8)
    for block in blocks:
        levels = _finite_levels(flat[block])
        levels -= low
        levels *= 255.0 / span
        scaled[block] = np.rint(levels, out=levels)
    return scaled.reshape(values.shape)


def _finite_levels(values: np.ndarray) -> np.ndarray:
    """`values` as float64, NaN and infinities read as 0: a fresh array, to change in place."""
    return np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0, copy=False)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 array to (height, width) with antialiased bilinear filtering.

    Training and serving both call this, so a served crop is resampled exactly like a training one.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
