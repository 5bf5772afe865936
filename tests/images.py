"""Images built in memory for tests: ordinary uploads, and the odd modes a decoder must convert.

Everything here is made with Pillow or numpy from fixed seeds, or written by hand (`handmade_png`)
where Pillow cannot write what a test needs. Files a decoder must refuse are in refused_images.py.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)


def image_bytes(image_format: str, height: int = 48, width: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def encode(image: Image.Image | np.ndarray, image_format: str, **params: Any) -> bytes:
    """A Pillow image, or an RGB uint8 array, as the bytes of an image file."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def noisy_image(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Random pixels: data that compresses poorly, so that a cut leaves rows undecoded."""
    pixels = np.random.default_rng(11).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def two_colour_image(size: tuple[int, int] = (32, 24)) -> Image.Image:
    """Red on the left half, blue on the right half."""
    width, height = size
    image = Image.new("RGB", size, BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def row_image(mode: str, values: Sequence[Any]) -> Image.Image:
    """A one-row image whose pixels are `values`, left to right."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    return image


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", checksum)


def handmade_png(
    width: int, height: int, bit_depth: int, colour_type: int, pixels: bytes, interlace: int = 0
) -> bytes:
    """A PNG with the given header and already-filtered scanlines, for what Pillow cannot write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(pixels))
        + png_chunk(b"IEND", b"")
    )


def cmyk_jpeg() -> bytes:
    data = encode(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95)
    assert b"Adobe" in data  # the APP14 marker that makes readers invert the CMYK values
    return data


def sixteen_bit_rgb_png() -> bytes:
    # One 2-pixel scanline, filter byte 0, samples big-endian: (65535, 0, 32896) and (0, 65535, 0).
    samples = struct.pack(">6H", 65535, 0, 32896, 0, 65535, 0)
    return handmade_png(2, 1, 16, 2, b"\x00" + samples)


def transparent_palette_png() -> bytes:
    image = row_image("P", [0, 1])
    image.putpalette([*RED, *GREEN])
    return encode(image, "PNG", transparency=0)
