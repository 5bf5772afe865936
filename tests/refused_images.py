"""Image files a decoder must refuse, and the tools that make them from good ones.

Cut short (`truncated`), damaged (`png_with_bad_checksum`, `jpeg_with_garbage`), with a header
that promises more than the data holds (`jpeg_declaring`, `png_declaring_rows`), or of a format
off the allow-list (`UNSUPPORTED`).
"""

from __future__ import annotations

import struct

import numpy as np
from tests.images import encode, handmade_png, noisy_image, two_colour_image


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def png_with_bad_checksum(chunk_type: bytes) -> bytes:
    data = bytearray(encode(two_colour_image(), "PNG"))
    start = data.index(chunk_type) - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    data[start + 8 + length] ^= 0xFF
    return bytes(data)


def jpeg_declaring(size: tuple[int, int], data: bytes) -> bytes:
    """`data`, a baseline JPEG, with its frame header (SOF0) saying it is `size` pixels."""
    start = data.index(b"\xff\xc0") + 5
    return data[:start] + struct.pack(">HH", size[1], size[0]) + data[start + 4 :]


def entropy_coded_start(data: bytes) -> int:
    """Where a JPEG's entropy-coded data starts: past its (first) scan header."""
    scan = data.index(b"\xff\xda")
    return scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")


def jpeg_with_garbage() -> bytes:
    data = bytearray(encode(noisy_image(), "JPEG", quality=90))
    start = entropy_coded_start(bytes(data))
    garbage = np.random.default_rng(5).integers(0, 255, 600, dtype=np.uint8)  # never 0xFF
    data[start + 200 : start + 800] = garbage.tobytes()
    return bytes(data)


def png_declaring_rows(rows: int, of: int, width: int = 64) -> bytes:
    """A grey PNG whose header says `of` rows over a zlib stream, complete, of `rows` rows."""
    return handmade_png(width, of, 8, 0, (b"\x00" + bytes(range(width))) * rows)


UNSUPPORTED = {
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "svg-with-prolog": b'\xef\xbb\xbf\n  <?xml version="1.0"?>\n<svg></svg>',
    "svg-doctype": b"<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'x'><svg/>",
    "pdf": encode(two_colour_image(), "PDF"),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "eps-binary-header": b"\xc5\xd0\xd3\xc6" + bytes(28),
    "avif": encode(two_colour_image(), "AVIF"),
    "jpeg2000": encode(two_colour_image(), "JPEG2000"),
    # Formats Pillow opens, but off the allow-list: refused by their signature alone.
    "ico": encode(two_colour_image(), "ICO"),
    "tga": encode(two_colour_image(), "TGA"),
    "pcx": encode(two_colour_image(), "PCX"),
    "ppm": encode(two_colour_image(), "PPM"),
    "sgi": encode(two_colour_image(), "SGI"),
    "qoi": encode(two_colour_image(), "QOI"),
    "dds": encode(two_colour_image(), "DDS"),
    "xbm": encode(two_colour_image().convert("1"), "XBM"),
    "dib": encode(two_colour_image(), "DIB"),
}
