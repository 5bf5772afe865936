"""Tests for facedemo.imaging: every image is built in memory with Pillow (or by hand for PNG)."""

from __future__ import annotations

import io
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from tests.images import (
    BLUE,
    GREEN,
    RED,
    cmyk_jpeg,
    encode,
    handmade_png,
    noisy_image,
    row_image,
    sixteen_bit_rgb_png,
    transparent_palette_png,
    two_colour_image,
)
from tests.refused_images import (
    UNSUPPORTED,
    jpeg_declaring,
    jpeg_with_garbage,
    png_declaring_rows,
    png_with_bad_checksum,
    truncated,
)

from facedemo import imaging
from facedemo.errors import (
    FacedemoError,
    ImageCorrupt,
    ImageDecodeError,
    ImageTooExpensive,
    ImageTooLarge,
    ImageTruncated,
    UnsupportedImageFormat,
)
from facedemo.imaging import (
    ACCEPTED_FORMAT_NAMES,
    decode_image,
    decode_reduced,
    price_image,
    resize_rgb,
)

MAX_PIXELS = 1_000_000


def assert_close(actual: np.ndarray, expected: Sequence[int], tolerance: int) -> None:
    difference = np.abs(actual.astype(int) - np.asarray(expected, dtype=int))
    assert difference.max() <= tolerance, f"{actual.tolist()} not within {tolerance} of {expected}"


@pytest.mark.parametrize(
    ("image_format", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 8),
        ("PNG", {}, 0),
        ("WEBP", {"quality": 90}, 12),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("GIF", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_allowed_formats_keep_size_and_colours(
    image_format: str, params: dict[str, Any], tolerance: int
) -> None:
    data = encode(two_colour_image(), image_format, **params)
    assert Image.open(io.BytesIO(data)).format == image_format

    decoded = decode_image(data, max_pixels=MAX_PIXELS)

    assert decoded.shape == (24, 32, 3)
    assert decoded.dtype == np.uint8
    assert_close(decoded[12, 4], RED, tolerance)
    assert_close(decoded[12, 27], BLUE, tolerance)


def transparent_palette_gif() -> bytes:
    image = row_image("P", [0, 1])
    image.putpalette([*RED, *GREEN])
    return encode(image, "GIF", transparency=0)


def opaque_palette_bmp() -> bytes:
    image = row_image("P", [0, 1])
    image.putpalette([*RED, *GREEN])
    return encode(image, "BMP")


@pytest.mark.parametrize(
    ("make_data", "opened_mode", "expected_row", "tolerance"),
    [
        pytest.param(
            lambda: encode(row_image("L", [0, 200]), "PNG"),
            "L",
            [(0, 0, 0), (200, 200, 200)],
            0,
            id="L",
        ),
        pytest.param(
            lambda: encode(row_image("1", [0, 255]), "PNG"),
            "1",
            [(0, 0, 0), (255, 255, 255)],
            0,
            id="1",
        ),
        pytest.param(opaque_palette_bmp, "P", [RED, GREEN], 0, id="P"),
        pytest.param(transparent_palette_png, "P", [(255, 255, 255), GREEN], 0, id="P-transparent"),
        pytest.param(
            transparent_palette_gif, "P", [(255, 255, 255), GREEN], 0, id="P-transparent-gif"
        ),
        pytest.param(
            lambda: encode(row_image("LA", [(0, 0), (0, 255), (0, 128)]), "PNG"),
            "LA",
            [(255, 255, 255), (0, 0, 0), (127, 127, 127)],
            1,
            id="LA",
        ),
        pytest.param(
            lambda: encode(
                row_image("RGBA", [(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 255, 128)]), "PNG"
            ),
            "RGBA",
            [(255, 255, 255), RED, (127, 127, 255)],
            1,
            id="RGBA",
        ),
        pytest.param(
            lambda: encode(row_image("I;16", [0, 32896, 65535]), "PNG"),
            "I;16",
            [(0, 0, 0), (128, 128, 128), (255, 255, 255)],
            0,
            id="I;16",
        ),
        pytest.param(
            lambda: encode(row_image("I;16B", [0, 65535]), "TIFF"),
            "I;16B",
            [(0, 0, 0), (255, 255, 255)],
            0,
            id="I;16B",
        ),
        pytest.param(
            lambda: encode(row_image("I", [0, 65535]), "TIFF"),
            "I",
            [(0, 0, 0), (255, 255, 255)],
            0,
            id="I-16-bit-range",
        ),
        pytest.param(
            lambda: encode(row_image("I", [-1000, 0, 1000]), "TIFF"),
            "I",
            [(0, 0, 0), (128, 128, 128), (255, 255, 255)],
            0,
            id="I-stretched",
        ),
        pytest.param(
            lambda: encode(row_image("F", [0.0, 0.5, 1.0]), "TIFF"),
            "F",
            [(0, 0, 0), (128, 128, 128), (255, 255, 255)],
            0,
            id="F",
        ),
        pytest.param(cmyk_jpeg, "CMYK", [(0, 255, 255)], 8, id="CMYK-jpeg-adobe"),
        pytest.param(
            lambda: encode(Image.new("CMYK", (2, 1), (255, 0, 0, 0)), "TIFF"),
            "CMYK",
            [(0, 255, 255), (0, 255, 255)],
            0,
            id="CMYK-tiff",
        ),
        pytest.param(sixteen_bit_rgb_png, "RGB", [RED[:2] + (128,), GREEN], 0, id="RGB-16-bit"),
        pytest.param(
            lambda: encode(Image.new("YCbCr", (2, 1), (76, 85, 255)), "TIFF"),
            "YCbCr",
            [RED, RED],
            2,
            id="YCbCr",
        ),
    ],
)
def test_modes_convert_to_rgb(
    make_data: Callable[[], bytes],
    opened_mode: str,
    expected_row: list[tuple[int, int, int]],
    tolerance: int,
) -> None:
    data = make_data()
    assert Image.open(io.BytesIO(data)).mode == opened_mode

    decoded = decode_image(data, max_pixels=MAX_PIXELS)

    assert decoded.dtype == np.uint8
    assert decoded.shape[2] == 3
    for column, expected in enumerate(expected_row):
        assert_close(decoded[0, column], expected, tolerance)


def oriented_jpeg(orientation: int) -> bytes:
    """A 64x32 blue JPEG with a red 16x16 marker in its stored top-left corner."""
    image = Image.new("RGB", (64, 32), BLUE)
    image.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, subsampling=0, exif=exif)


@pytest.mark.parametrize(
    ("orientation", "shape", "marker", "elsewhere"),
    [
        (1, (32, 64, 3), (8, 8), (24, 56)),
        (6, (64, 32, 3), (8, 24), (56, 8)),  # rotated 90 degrees clockwise: marker top right
        (8, (64, 32, 3), (56, 8), (8, 24)),  # rotated 90 degrees anticlockwise: marker bottom left
    ],
)
def test_exif_orientation_is_applied(
    orientation: int,
    shape: tuple[int, int, int],
    marker: tuple[int, int],
    elsewhere: tuple[int, int],
) -> None:
    decoded = decode_image(oriented_jpeg(orientation), max_pixels=MAX_PIXELS)

    assert decoded.shape == shape
    assert_close(decoded[marker], RED, 10)
    assert_close(decoded[elsewhere], BLUE, 10)


@pytest.mark.parametrize(
    ("image_format", "params"),
    [
        ("GIF", {"duration": 100, "loop": 0}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
        ("PNG", {}),
    ],
)
def test_multi_frame_images_give_their_first_frame(
    image_format: str, params: dict[str, Any]
) -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], image_format, save_all=True, append_images=frames[1:], **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3

    decoded = decode_image(data, max_pixels=MAX_PIXELS)

    assert decoded.shape == (6, 8, 3)
    assert (decoded == RED).all()


@pytest.mark.parametrize("size", [(1, 1), (2, 2)])
@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_tiny_images_decode(size: tuple[int, int], image_format: str) -> None:
    data = encode(Image.new("RGB", size, (200, 200, 200)), image_format)

    decoded = decode_image(data, max_pixels=MAX_PIXELS)

    assert decoded.shape == (size[1], size[0], 3)
    assert_close(decoded[0, 0], (200, 200, 200), 3)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # The header declares 30000x30000 over a single byte of pixel data: decoding is never tried.
    bomb = handmade_png(30_000, 30_000, 1, 0, b"\x00")
    started = time.perf_counter()

    with pytest.raises(ImageTooLarge):
        decode_image(bomb, max_pixels=40_000_000)

    assert time.perf_counter() - started < 5


def test_pixel_limit_is_checked_from_the_header() -> None:
    # 5000x5000 is under Pillow's own guard, so only our limit can refuse it; the pixel data is
    # bogus, so an ImageDecodeError would mean decoding started first.
    header_only = handmade_png(5000, 5000, 8, 2, b"\x00")

    with pytest.raises(ImageTooLarge, match="5000x5000"):
        decode_image(header_only, max_pixels=1_000_000)


def test_pixel_limit_boundary() -> None:
    data = encode(Image.new("RGB", (100, 100), RED), "PNG")

    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=9_999)


@pytest.mark.parametrize("side", [12, 20])  # 144 px trips Pillow's warning, 400 px its error
def test_pillow_bomb_guard_becomes_image_too_large(
    side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    data = encode(Image.new("RGB", (side, side), RED), "PNG")
    filters_before = list(warnings.filters)

    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=MAX_PIXELS)

    assert warnings.filters == filters_before


UNDECODABLE = {
    "empty": b"",
    "text": b"Hello, this is a plain text file and certainly not a picture.\n",
    "random": np.random.default_rng(7).bytes(4096),
    "truncated-jpeg": truncated(encode(two_colour_image(), "JPEG")),
    "truncated-png": truncated(encode(two_colour_image(), "PNG")),
    "png-without-iend": encode(two_colour_image(), "PNG")[:-12],
    "png-bad-ihdr-crc": png_with_bad_checksum(b"IHDR"),
    "png-bad-idat-crc": png_with_bad_checksum(b"IDAT"),
}


@pytest.mark.parametrize("data", UNDECODABLE.values(), ids=UNDECODABLE.keys())
def test_undecodable_bytes_raise_image_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_truncation_is_caught_even_when_pillow_is_told_to_allow_it(
    image_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = encode(two_colour_image((64, 48)), image_format)

    with pytest.raises(ImageDecodeError):
        decode_image(truncated(data, 0.7), max_pixels=MAX_PIXELS)


def test_error_details_do_not_echo_the_upload() -> None:
    secret = b"customer-4711 private note"

    with pytest.raises(ImageDecodeError) as raised:
        decode_image(secret, max_pixels=MAX_PIXELS)

    assert "4711" not in raised.value.detail


@pytest.mark.parametrize("data", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_formats_off_the_allow_list_are_unsupported(
    data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(imaging.Image, "open", lambda *args, **kwargs: opened.append(args))

    with pytest.raises(UnsupportedImageFormat) as raised:
        decode_image(data, max_pixels=MAX_PIXELS)

    assert raised.value.code == "unsupported_image_format"
    assert raised.value.detail.endswith(f"send {ACCEPTED_FORMAT_NAMES}")
    assert opened == []  # refused from its first bytes: no Pillow parser saw it


@pytest.mark.parametrize(
    ("image_format", "name"),
    [("ICO", "ICO"), ("TGA", "TGA"), ("PCX", "PCX"), ("PPM", "PPM"), ("DIB", "DIB")],
)
def test_an_unsupported_format_is_named(image_format: str, name: str) -> None:
    with pytest.raises(UnsupportedImageFormat, match=f"^{name} .*not an accepted image format"):
        decode_image(encode(two_colour_image(), image_format), max_pixels=MAX_PIXELS)


def test_a_tga_without_its_footer_is_still_recognised() -> None:
    data = encode(two_colour_image(), "TGA", compression="tga_rle")
    assert data.endswith(b"TRUEVISION-XFILE.\x00")

    with pytest.raises(UnsupportedImageFormat, match="^TGA"):
        decode_image(data[:-26], max_pixels=MAX_PIXELS)  # a TGA 1.0 file: no footer


# Pillow decodes each of these without a word (the JPEGs and the non-interlaced PNGs even while
# LOAD_TRUNCATED_IMAGES is False), filling what is missing with grey or black.
SILENTLY_INCOMPLETE = {
    "jpeg-6000x6000-header-over-a-few-rows": (
        lambda: jpeg_declaring((6000, 6000), encode(noisy_image((64, 16)), "JPEG")),
        ImageTruncated,
    ),
    "jpeg-cut-then-eoi": (
        lambda: truncated(encode(noisy_image(), "JPEG"), 0.5) + b"\xff\xd9",
        ImageTruncated,
    ),
    "progressive-jpeg-cut-then-eoi": (
        lambda: truncated(encode(noisy_image(), "JPEG", progressive=True), 0.5) + b"\xff\xd9",
        ImageTruncated,
    ),
    "jpeg-corrupt-entropy-coded-data": (jpeg_with_garbage, ImageCorrupt),
    "png-6000x6000-header-over-three-rows": (lambda: png_declaring_rows(3, 6000), ImageTruncated),
    "png-one-row-short": (lambda: png_declaring_rows(47, 48), ImageTruncated),
    "interlaced-png-one-byte-short": (
        lambda: handmade_png(5, 3, 8, 0, bytes(adam7_length(5, 3) - 1), interlace=1),
        ImageTruncated,
    ),
}


def adam7_length(width: int, height: int) -> int:
    """The filtered bytes of an 8-bit grey Adam7 image, counted pixel by pixel."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
    total = 0
    for x0, y0, dx, dy in [*passes, (0, 1, 1, 2)]:
        columns, rows = len(range(x0, width, dx)), len(range(y0, height, dy))
        total += rows * (1 + columns) if columns else 0
    return total


@pytest.mark.parametrize("load_truncated", [False, True])
@pytest.mark.parametrize(
    ("make", "error"), SILENTLY_INCOMPLETE.values(), ids=SILENTLY_INCOMPLETE.keys()
)
def test_data_that_stops_short_or_is_damaged_is_refused(
    make: Callable[[], bytes],
    error: type[ImageDecodeError],
    load_truncated: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    data = make()
    if load_truncated:  # what the checks are for: Pillow alone takes each as it is
        Image.open(io.BytesIO(data)).load()

    with pytest.raises(error) as raised:
        decode_image(data, max_pixels=40_000_000)
    with pytest.raises(error):
        decode_reduced(data, max_pixels=40_000_000, longest_side=64)

    assert raised.value.code == ("image_truncated" if error is ImageTruncated else "image_corrupt")


def test_an_interlaced_png_of_the_declared_length_decodes() -> None:
    # The same size arithmetic as the refusal above, on the exact length: nothing refused.
    data = handmade_png(5, 3, 8, 0, bytes(adam7_length(5, 3)), interlace=1)

    assert decode_image(data, max_pixels=MAX_PIXELS).shape == (3, 5, 3)


TRUNCATED_FILES = {
    "jpeg": lambda: truncated(encode(noisy_image(), "JPEG"), 0.6),
    "png": lambda: truncated(encode(noisy_image(), "PNG"), 0.6),
    "webp": lambda: truncated(encode(noisy_image(), "WEBP"), 0.6),
    "webp-lossless": lambda: truncated(encode(noisy_image(), "WEBP", lossless=True), 0.6),
    "gif-with-its-trailer": lambda: truncated(encode(noisy_image(), "GIF"), 0.6) + b"\x00;",
    "tiff": lambda: truncated(encode(noisy_image(), "TIFF"), 0.6),
    "bmp": lambda: truncated(encode(noisy_image(), "BMP"), 0.6),
}


@pytest.mark.parametrize("load_truncated", [False, True])
@pytest.mark.parametrize("make", TRUNCATED_FILES.values(), ids=TRUNCATED_FILES.keys())
def test_a_cut_off_file_is_image_truncated(
    make: Callable[[], bytes], load_truncated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)

    with pytest.raises(ImageTruncated, match="truncated"):
        decode_image(make(), max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(
    ("make", "mode"),
    [
        (lambda: encode(noisy_image(), "JPEG", progressive=True), "RGB"),
        (lambda: encode(noisy_image().convert("L"), "JPEG"), "L"),
        (cmyk_jpeg, "CMYK"),
        (lambda: encode(noisy_image(), "MPO", save_all=True, append_images=[noisy_image()]), ""),
        (lambda: encode(noisy_image(), "JPEG", restart_marker_blocks=4), "RGB"),
    ],
    ids=["progressive", "grey", "cmyk", "mpo", "restart-markers"],
)
def test_whole_jpegs_of_every_kind_pass_the_data_check(
    make: Callable[[], bytes], mode: str
) -> None:
    data = make()

    decoded = decode_image(data, max_pixels=MAX_PIXELS)

    assert decoded.shape[2] == 3
    assert not mode or Image.open(io.BytesIO(data)).mode == mode


def test_a_jpeg_with_stray_bytes_between_segments_decodes_whole() -> None:
    # Some cameras and editors leave bytes between segments; libjpeg warns and skips them, and
    # every pixel is there, so refusing such a photo would refuse what every browser shows.
    whole = encode(noisy_image(), "JPEG")
    segment_end = 4 + int.from_bytes(whole[4:6], "big")  # after the APP0 segment
    stray = whole[:segment_end] + b"\x00" * 4 + whole[segment_end:]

    assert np.array_equal(
        decode_image(stray, max_pixels=MAX_PIXELS), decode_image(whole, max_pixels=MAX_PIXELS)
    )


def test_concurrent_decodes_agree_and_restore_warning_filters() -> None:
    data = encode(two_colour_image(), "PNG")
    expected = decode_image(data, max_pixels=MAX_PIXELS)
    filters_before = list(warnings.filters)
    results: list[np.ndarray] = []

    def decode_many() -> None:
        results.extend(decode_image(data, max_pixels=MAX_PIXELS) for _ in range(10))

    threads = [threading.Thread(target=decode_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 40
    assert all(np.array_equal(result, expected) for result in results)
    assert warnings.filters == filters_before


def photo(size: tuple[int, int], image_format: str = "JPEG", **params: Any) -> bytes:
    """A `size` (width, height) image: a red left half, a blue right half."""
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, size[0] // 2, size[1]))
    return encode(image, image_format, **params)


@pytest.mark.parametrize(
    ("longest_side", "shape"),
    [
        (2000, (600, 1000, 3)),  # smaller than asked: whole
        (1000, (600, 1000, 3)),
        (999, (600, 1000, 3)),  # 1/2 would leave 500 px
        (500, (300, 500, 3)),  # 1/2
        (260, (300, 500, 3)),  # 1/4 would leave 250 px
        (250, (150, 250, 3)),  # 1/4
        (100, (75, 125, 3)),  # 1/8, the smallest scale
        (10, (75, 125, 3)),
    ],
)
def test_decode_reduced_keeps_the_longer_side_at_least_as_asked(
    longest_side: int, shape: tuple[int, int, int]
) -> None:
    reduced = decode_reduced(photo((1000, 600)), max_pixels=MAX_PIXELS, longest_side=longest_side)

    assert reduced.pixels.shape == shape
    assert (reduced.width, reduced.height) == (1000, 600)
    assert reduced.scale == (1000 / shape[1], 600 / shape[0])
    assert_close(reduced.pixels[shape[0] // 2, shape[1] // 4], RED, 10)
    assert_close(reduced.pixels[shape[0] // 2, 3 * shape[1] // 4], BLUE, 10)


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(encode(two_colour_image(), "PNG"), max_pixels=0)


def test_resize_rgb_gives_requested_shape_and_keeps_colour() -> None:
    image = np.full((30, 40, 3), (10, 200, 30), dtype=np.uint8)

    resized = resize_rgb(image, (16, 24))

    assert resized.shape == (16, 24, 3)
    assert resized.dtype == np.uint8
    assert (resized == (10, 200, 30)).all()
    assert resize_rgb(image, (30, 40)) is image


FUZZ_SEEDS = [
    encode(two_colour_image((8, 6)), image_format)
    for image_format in ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(FUZZ_SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[position] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data[: draw(st.integers(min_value=1, max_value=len(data)))])


def assert_rgb_or_typed_error(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS)
    except FacedemoError:
        return
    assert decoded.dtype == np.uint8
    assert decoded.ndim == 3
    assert decoded.shape[2] == 3
    assert decoded.shape[0] * decoded.shape[1] <= MAX_PIXELS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_a_typed_error(data: bytes) -> None:
    assert_rgb_or_typed_error(data)


@settings(max_examples=200, deadline=None)
@given(mutated_images())
def test_mutated_images_decode_or_raise_a_typed_error(data: bytes) -> None:
    assert_rgb_or_typed_error(data)


def test_decode_reduced_decodes_other_formats_whole() -> None:
    reduced = decode_reduced(photo((400, 200), "PNG"), max_pixels=MAX_PIXELS, longest_side=100)

    assert reduced.pixels.shape == (200, 400, 3)
    assert reduced.scale == (1.0, 1.0)


@pytest.mark.parametrize(("orientation", "size"), [(1, (64, 32)), (6, (32, 64)), (8, (32, 64))])
def test_decode_reduced_gives_the_size_of_the_turned_image(
    orientation: int, size: tuple[int, int]
) -> None:
    whole = decode_image(oriented_jpeg(orientation), max_pixels=MAX_PIXELS)

    reduced = decode_reduced(oriented_jpeg(orientation), max_pixels=MAX_PIXELS, longest_side=32)

    assert (reduced.width, reduced.height) == size == (whole.shape[1], whole.shape[0])
    assert reduced.pixels.shape == (size[1] // 2, size[0] // 2, 3)


def test_decode_reduced_holds_the_whole_image_to_the_pixel_limit() -> None:
    with pytest.raises(ImageTooLarge):
        decode_reduced(photo((1000, 600)), max_pixels=1000 * 600 - 1, longest_side=100)
    with pytest.raises(ValueError, match="longest_side"):
        decode_reduced(photo((100, 60)), max_pixels=MAX_PIXELS, longest_side=0)


def test_decodes_run_in_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each decode waits, mid-way, for the other to get there too: with one decode at a time
    # (a process-wide lock) the barrier breaks.
    barrier = threading.Barrier(2, timeout=5)
    convert = imaging._to_rgb_array

    def meet_then_convert(image: Image.Image) -> np.ndarray:
        barrier.wait()
        return convert(image)

    monkeypatch.setattr(imaging, "_to_rgb_array", meet_then_convert)
    data = encode(two_colour_image(), "PNG")
    failures: list[BaseException] = []

    def decode() -> None:
        try:
            decode_image(data, max_pixels=MAX_PIXELS)
        except BaseException as error:  # noqa: BLE001 - the thread's outcome, for the assert
            failures.append(error)

    threads = [threading.Thread(target=decode) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []


def widened_scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """The whole-image float64 formula that the block-wise scaling must reproduce exactly."""
    levels = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.rint((levels - low) * (255.0 / (high - low))).astype(np.uint8)


@pytest.mark.parametrize("mode", ["F", "I", "I;16"])
def test_high_bit_depth_scaling_in_blocks_is_exact(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imaging, "_SCALE_BLOCK_PIXELS", 1000)  # many blocks, a partial last one
    rng = np.random.default_rng(3)
    if mode == "F":
        values = rng.normal(5.0, 3.0, (61, 53)).astype(np.float32)
        values[0, :3] = [np.nan, np.inf, -np.inf]
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        expected = widened_scale(values, float(finite.min()), float(finite.max()))
    elif mode == "I":
        values = rng.integers(-70_000, 900_000, (61, 53), dtype=np.int32)
        expected = widened_scale(values, float(values.min()), float(values.max()))
    else:
        values = rng.integers(0, 65536, (61, 53), dtype=np.uint16)
        expected = widened_scale(values, 0.0, 65535.0)

    assert np.array_equal(imaging._scale_to_uint8(values, mode), expected)


PRICED = {
    "rgb-jpeg": (Image.new("RGB", (300, 200), RED), "JPEG", "RGB"),
    "grey-png": (Image.new("L", (300, 200), 90), "PNG", "L"),
    "rgba-png": (Image.new("RGBA", (300, 200), (1, 2, 3, 4)), "PNG", "RGBA"),
    "16-bit-png": (Image.new("I;16", (300, 200), 900), "PNG", "I;16"),
    "float-tiff": (Image.new("F", (300, 200), 0.5), "TIFF", "F"),
}


@pytest.mark.parametrize(("image", "image_format", "mode"), PRICED.values(), ids=PRICED.keys())
def test_the_price_comes_from_the_header_and_grows_with_depth_and_bands(
    image: Image.Image, image_format: str, mode: str
) -> None:
    price = price_image(encode(image, image_format), max_pixels=MAX_PIXELS)

    assert (price.format, price.mode, price.width, price.height) == (image_format, mode, 300, 200)
    assert (price.decoded_width, price.decoded_height) == (300, 200)
    rgb = price_image(encode(Image.new("RGB", (300, 200)), "PNG"), max_pixels=MAX_PIXELS)
    if mode == "RGB":
        assert price.decode_bytes == rgb.decode_bytes
    elif mode in ("RGBA", "F"):
        assert price.decode_bytes > rgb.decode_bytes
    assert price.decode_bytes >= 300 * 200 * 3  # never below the RGB array it ends in


def test_a_reduced_jpeg_is_priced_by_the_pixels_it_decodes() -> None:
    data = photo((1600, 1200))

    whole = price_image(data, max_pixels=MAX_PIXELS * 4)
    reduced = price_image(data, max_pixels=MAX_PIXELS * 4, longest_side=400)

    assert (reduced.width, reduced.height) == (1600, 1200)
    assert (reduced.decoded_width, reduced.decoded_height) == (400, 300)
    assert reduced.decode_bytes * 16 == whole.decode_bytes
    decoded = decode_reduced(data, max_pixels=MAX_PIXELS * 4, longest_side=400)
    assert decoded.pixels.shape[:2] == (reduced.decoded_height, reduced.decoded_width)


def test_an_image_priced_over_the_limit_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encode(Image.new("F", (300, 200), 0.5), "TIFF")
    price = price_image(data, max_pixels=MAX_PIXELS).decode_bytes
    loaded: list[Image.Image] = []
    monkeypatch.setattr(imaging, "_to_rgb_array", lambda image: loaded.append(image))

    with pytest.raises(ImageTooExpensive, match=f"{price} bytes"):
        decode_image(data, max_pixels=MAX_PIXELS, max_decode_bytes=price - 1)
    with pytest.raises(ImageTooExpensive):
        price_image(data, max_pixels=MAX_PIXELS, max_decode_bytes=price - 1)
    with pytest.raises(ImageTooExpensive):
        decode_reduced(data, max_pixels=MAX_PIXELS, longest_side=50, max_decode_bytes=price - 1)
    assert loaded == []  # nothing reached the conversion


def test_price_image_checks_the_header_like_decode_image() -> None:
    with pytest.raises(ImageTooLarge):
        price_image(photo((200, 100)), max_pixels=19_999)
    with pytest.raises(UnsupportedImageFormat):
        price_image(UNSUPPORTED["pdf"], max_pixels=MAX_PIXELS)
    with pytest.raises(ImageDecodeError):
        price_image(UNDECODABLE["text"], max_pixels=MAX_PIXELS)
