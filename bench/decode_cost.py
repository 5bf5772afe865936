"""Peak memory of decoding one image, by Pillow mode: what imaging's price table is measured from.

    python -m bench.decode_cost                # every case, 24 MP each
    python -m bench.decode_cost --megapixels 8

Each case is one generated image of the given size (noise, so that no decoder can take a
shortcut), written to a temporary file; a fresh process reads it, decodes it with
`facedemo.imaging.decode_image` and reads its RSS before (/proc/self/status VmRSS) and its peak
RSS after (VmHWM, reset first through /proc/self/clear_refs); the rise over the pixels is the
bytes a pixel takes at the decode's peak. It prints them next to `price_image`'s figure, which
must not be lower.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CASES = (
    "JPEG-RGB",
    "JPEG-L",
    "PNG-RGB",
    "PNG-RGBA",
    "PNG-P",
    "PNG-L",
    "PNG-I;16",
    "TIFF-F",
    "TIFF-I",
)


def generate(case: str, width: int, height: int) -> bytes:
    """`case` ("FORMAT-MODE") as an encoded image of width x height noise."""
    image_format, mode = case.split("-", 1)
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((height, width), dtype=np.float32))
    elif mode == "I":
        image = Image.fromarray(rng.integers(0, 1 << 20, (height, width), dtype=np.int32))
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        pixels = rng.integers(0, 256, (height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels.squeeze(axis=2) if bands == 1 else pixels)
        if mode == "P":
            image = image.convert("RGB").quantize(64)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def status_bytes(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def measure(path: Path) -> None:
    """In this process: decode the file and print its mode, peak rise and price a pixel."""
    from facedemo.imaging import decode_image, price_image

    data = path.read_bytes()
    with Image.open(path) as image:
        limit = image.width * image.height
    price = price_image(data, max_pixels=limit)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = status_bytes("VmRSS")
    decode_image(data, max_pixels=limit)
    after = status_bytes("VmHWM")
    print(f"{price.mode}\t{(after - before) / limit:.1f}\t{price.decode_bytes / limit:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=24.0)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    width = int((args.megapixels * 1e6 * 1.5) ** 0.5)
    height = int(args.megapixels * 1e6 / width)
    if args.measure:
        measure(Path(args.measure))
        return 0
    print(f"{width}x{height} pixels a case\n")
    print("| case | mode | measured bytes a pixel | priced bytes a pixel |")
    print("| --- | --- | ---: | ---: |")
    worst = 0.0
    for case in CASES:
        with tempfile.NamedTemporaryFile(prefix="decode-cost-") as file:
            file.write(generate(case, width, height))
            file.flush()
            command = [sys.executable, "-m", "bench.decode_cost", "--measure", file.name]
            mode, measured, priced = subprocess.run(
                command, check=True, capture_output=True, text=True
            ).stdout.split()
        worst = max(worst, float(measured) / float(priced))
        print(f"| {case} | {mode} | {measured} | {priced} |")
    print(f"\nworst measured/priced: {worst:.2f}")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
