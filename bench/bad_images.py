"""The bad-image corpus: what Pillow alone makes of each malformed upload, what facedemo answers,
and what the checks that tell them apart cost on a whole photo.

    .venv/bin/python -m bench.bad_images                 # the corpus, then the cost figures
    .venv/bin/python -m bench.bad_images --side 6000     # the photo for the cost figures

Every image is built in memory. For each case: whether Pillow's own `Image.open(...).load()`
takes it without an error (for the accepted formats, what facedemo answered 200 to before issue
36, grey or black filling the rest), and the problem `imaging.decode_image` raises (status and
code; the API answers the same). Then, on a noisy photo in JPEG and PNG, Pillow's decode alone,
`decode_image`, and the data check alone (the JPEG's entropy-coded data read by libjpeg-turbo,
the PNG's rows counted), best of --repeat runs. The machine is shared: times move between runs.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from facedemo import imaging
from facedemo.errors import FacedemoError
from facedemo.imaging import decode_image

MAX_PIXELS = 40_000_000


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def noisy(size: tuple[int, int], seed: int = 11) -> Image.Image:
    """A smooth gradient with noise: compresses like a photo, not like a flat colour."""
    width, height = size
    rows, columns = np.mgrid[0:height, 0:width]
    gradient = np.stack([columns / width, rows / height, (rows + columns) / (width + height)], -1)
    noise = np.random.default_rng(seed).normal(0, 12, (height, width, 3))
    return Image.fromarray((gradient * 255 + noise).clip(0, 255).astype(np.uint8))


def cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


def jpeg_declaring(size: tuple[int, int], data: bytes) -> bytes:
    start = data.index(b"\xff\xc0") + 5
    return data[:start] + struct.pack(">HH", size[1], size[0]) + data[start + 4 :]


def jpeg_with_garbage() -> bytes:
    data = bytearray(encode(noisy((320, 240)), "JPEG", quality=90))
    scan = data.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")
    garbage = np.random.default_rng(5).integers(0, 255, 2000, dtype=np.uint8)  # no 0xFF
    data[start + 500 : start + 2500] = garbage.tobytes()
    return bytes(data)


def png_chunk(chunk_type: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(chunk_type + payload)
    return struct.pack(">I", len(payload)) + chunk_type + payload + struct.pack(">I", checksum)


def png_declaring_rows(rows: int, of: int, width: int = 6000) -> bytes:
    header = struct.pack(">IIBBBBB", width, of, 8, 0, 0, 0, 0)
    pixels = (b"\x00" + bytes(i % 256 for i in range(width))) * rows
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(pixels))
        + png_chunk(b"IEND", b"")
    )


def png_with_bad_idat() -> bytes:
    data = bytearray(encode(noisy((64, 48)), "PNG"))
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    data[start + 8 + length] ^= 0xFF
    return bytes(data)


def photo(image_format: str) -> Callable[[], bytes]:
    return lambda: encode(noisy((320, 240)), image_format)


CASES: dict[str, Callable[[], bytes]] = {
    "JPEG header 6000x6000 over a few rows": lambda: jpeg_declaring(
        (6000, 6000), encode(noisy((64, 16)), "JPEG")
    ),
    "JPEG cut at 50%, EOI appended": lambda: cut(photo("JPEG")(), 0.5) + b"\xff\xd9",
    "progressive JPEG cut at 50%, EOI appended": lambda: (
        cut(encode(noisy((320, 240)), "JPEG", progressive=True), 0.5) + b"\xff\xd9"
    ),
    "JPEG, corrupt entropy-coded data": jpeg_with_garbage,
    "JPEG cut at 60%": lambda: cut(photo("JPEG")(), 0.6),
    "PNG header 6000x6000 over three rows": lambda: png_declaring_rows(3, 6000),
    "PNG cut at 60%": lambda: cut(photo("PNG")(), 0.6),
    "PNG, an IDAT checksum wrong": png_with_bad_idat,
    "WebP cut at 60%": lambda: cut(photo("WEBP")(), 0.6),
    "GIF cut at 60%, trailer appended": lambda: cut(photo("GIF")(), 0.6) + b"\x00;",
    "TIFF cut at 60%": lambda: cut(photo("TIFF")(), 0.6),
    "BMP cut at 60%": lambda: cut(photo("BMP")(), 0.6),
    "ICO": photo("ICO"),
    "TGA": photo("TGA"),
    "PCX": photo("PCX"),
    "PPM": photo("PPM"),
    "SGI": photo("SGI"),
    "QOI": photo("QOI"),
    "DDS": photo("DDS"),
    "PDF": photo("PDF"),
    "whole JPEG (control)": photo("JPEG"),
    "whole PNG (control)": photo("PNG"),
}


def pillow_takes(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception:  # noqa: BLE001 - any refusal counts as one
        return False
    return True


def outcome(data: bytes) -> str:
    try:
        decode_image(data, max_pixels=MAX_PIXELS)
    except FacedemoError as error:
        return f"{error.status} {error.code}"
    return "200"


def best_time(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=4000, help="cost photo's width (default 4000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs a figure (default 3)")
    args = parser.parse_args(argv)
    print("| case | Pillow alone | facedemo |\n| --- | --- | --- |")
    for name, make in CASES.items():
        data = make()
        taken = "decodes" if pillow_takes(data) else "refuses"
        print(f"| {name} | {taken} | {outcome(data)} |", flush=True)
    size = (args.side, args.side * 2 // 3)
    image = noisy(size)
    print(f"\n| {size[0]}x{size[1]} photo | Pillow (s) | decode_image (s) | the check alone (s) |")
    print("| --- | ---: | ---: | ---: |")
    for image_format in ("JPEG", "PNG"):
        data = encode(image, image_format)

        def pillow(data: bytes = data) -> object:
            with Image.open(io.BytesIO(data)) as opened:
                return np.asarray(opened.convert("RGB"))

        plain = best_time(pillow, args.repeat)
        checked = best_time(
            lambda data=data: decode_image(data, max_pixels=MAX_PIXELS), args.repeat
        )
        if image_format == "JPEG":
            check = best_time(
                lambda data=data: imaging._strict_jpeg_pixels(data, "GRAY"), args.repeat
            )
        else:
            check = best_time(lambda data=data: imaging._check_png_length(data), args.repeat)
        print(f"| {image_format} | {plain:.3f} | {checked:.3f} | {check:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
