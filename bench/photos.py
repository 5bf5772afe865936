"""Group photos made at run time: UTKFace chips pasted onto a scikit-image scene, as JPEG.

    python -m bench.photos /path/to/UTKFace --count 4 --out /tmp/photos   # to look at them

Nothing is written into the repository: the photos live in memory (or in --out, for a look).
Each photo is `width` pixels wide (3:2), a scikit-image scene (coffee, rocket, chelsea, ...)
stretched to fill it, with 3 to 5 UTKFace chips pasted at random, non-overlapping places, each
scaled to 8-16% of the width (a chip of 150-310 px in a 1920-pixel photo, the face in it
about 100-200 px: people a few metres from the camera). The chips' squares are the true faces:
a detected face whose box centre lies inside one counts as finding it (`recall`).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SCENES = ("coffee", "rocket", "chelsea", "astronaut", "hubble_deep_field", "immunohistochemistry")
FACES_PER_PHOTO = (3, 5)
FACE_SHARE = (0.08, 0.16)  # a pasted chip's side, as a share of the photo's width
JPEG_QUALITY = 90


@dataclass(frozen=True)
class GroupPhoto:
    """A JPEG group photo and where its faces are."""

    jpeg: bytes
    faces: list[tuple[int, int, int, int]]  # x, y, width, height of each pasted chip


def group_photos(
    utkface: Path, count: int, *, width: int = 1920, seed: int = 0
) -> list[GroupPhoto]:
    """`count` group photos of `width` x 2/3 `width` pixels made from chips in `utkface`."""
    from skimage import data

    names = sorted(path.name for path in utkface.glob("*.jpg"))
    if not names:
        raise FileNotFoundError(f"no UTKFace chips (*.jpg) in {utkface}")
    rng = random.Random(seed)
    height = width * 2 // 3
    photos = []
    for number in range(count):
        scene = getattr(data, SCENES[number % len(SCENES)])()
        if scene.ndim == 2:
            scene = np.stack([scene] * 3, axis=2)
        canvas = Image.fromarray(scene[:, :, :3]).resize((width, height), Image.Resampling.BILINEAR)
        faces: list[tuple[int, int, int, int]] = []
        wanted = rng.randint(*FACES_PER_PHOTO)
        for _ in range(200):  # tries for free places
            if len(faces) == wanted:
                break
            side = round(width * rng.uniform(*FACE_SHARE))
            x, y = rng.randrange(0, width - side), rng.randrange(0, height - side)
            if any(_overlaps((x, y, side, side), face) for face in faces):
                continue
            with Image.open(utkface / rng.choice(names)) as chip:
                face = chip.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
            canvas.paste(face, (x, y))
            faces.append((x, y, side, side))
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=JPEG_QUALITY)
        photos.append(GroupPhoto(jpeg=buffer.getvalue(), faces=faces))
    return photos


def recall(photo: GroupPhoto, boxes: list[tuple[float, float, float, float]]) -> int:
    """How many of the photo's faces some box (x, y, width, height) has its centre inside."""
    return sum(any(centred_on(face, box) for box in boxes) for face in photo.faces)


def centred_on(face: tuple[int, int, int, int], box: tuple[float, float, float, float]) -> bool:
    """Whether the centre of `box` (x, y, width, height) lies inside the pasted `face`."""
    fx, fy, fw, fh = face
    x, y, w, h = box
    return fx <= x + w / 2 <= fx + fw and fy <= y + h / 2 <= fy + fh


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    margin = 10
    return not (
        a[0] + a[2] + margin <= b[0]
        or b[0] + b[2] + margin <= a[0]
        or a[1] + a[3] + margin <= b[1]
        or b[1] + b[3] + margin <= a[1]
    )


def main(argv: list[str] | None = None) -> int:
    """Write a few photos to --out to look at them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("utkface", type=Path)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for number, photo in enumerate(group_photos(args.utkface, args.count, width=args.width)):
        (args.out / f"group-{number}.jpg").write_bytes(photo.jpeg)
        print(f"group-{number}.jpg: {len(photo.faces)} faces at {photo.faces}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
