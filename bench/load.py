"""Closed-loop HTTP load generator (httpx, async, loopback only, bounded in count and time).

    python -m bench.load http://127.0.0.1:8000 --images ../shared/data/utkface --concurrency 32 \\
        --requests 2000 --max-seconds 30 --detect skip

`concurrency` workers each send one request, wait for its answer, and send the next, until
`requests` have been sent or `max_seconds` have passed. Multipart bodies are built once, before
the clock starts, so the client spends its CPU on HTTP, not on encoding (client and server share
the machine's cores). The result has every latency, the statuses and the images sent.
`bench/throughput.py` drives the server with it; run alone it prints one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import numpy as np

BOUNDARY = "facedemo-bench-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Upload:
    """One prepared request: a multipart body and how many images it carries."""

    body: bytes
    images: int


@dataclass
class LoadResult:
    """What a run of the load generator saw."""

    concurrency: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    images: int = 0  # images in requests answered 200
    # (index into the uploads, response body) of each 200 answer, when `drive` was asked to keep
    answers: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests answered, whatever their status."""
        return sum(self.statuses.values())

    @property
    def images_per_second(self) -> float:
        """Images answered 200 per second of the run."""
        return self.images / self.seconds if self.seconds else 0.0

    def percentile_ms(self, percent: float) -> float:
        """A latency percentile of the successful requests, in milliseconds."""
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.array(self.latencies), percent) * 1000.0)


def multipart(field_name: str, images: list[bytes]) -> Upload:
    """A multipart/form-data body with each image as a `field_name` part."""
    parts = []
    for number, data in enumerate(images):
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="face-{number}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return Upload(body=b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), images=len(images))


def check_loopback(base_url: str) -> None:
    """Refuse to load anything but this machine."""
    host = urlsplit(base_url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the load generator only targets loopback, not {host!r}")


async def drive(
    base_url: str,
    path: str,
    uploads: list[Upload],
    *,
    concurrency: int,
    requests: int,
    max_seconds: float,
    params: dict[str, str] | None = None,
    keep_answers: bool = False,
) -> LoadResult:
    """Send up to `requests` POSTs of `uploads` (in turn) from `concurrency` workers; with
    `keep_answers`, the result holds the body of every 200 answer."""
    check_loopback(base_url)
    result = LoadResult(concurrency=concurrency)
    plan = iter(range(requests))
    headers = {"content-type": CONTENT_TYPE}
    # A client (and connection pool) per worker: httpcore's pool scans all its connections for
    # every request, which at 32 connections made the client, not the server, the bottleneck.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) for _ in range(concurrency)
    ]
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        async with client:
            for number in plan:
                if time.perf_counter() > deadline:
                    return
                upload = uploads[number % len(uploads)]
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        path, params=params, content=upload.body, headers=headers
                    )
                except httpx.TransportError:
                    result.transport_errors += 1
                    continue
                result.statuses[response.status_code] += 1
                if response.status_code == 200:
                    result.latencies.append(time.perf_counter() - sent)
                    result.images += upload.images
                    if keep_answers:
                        result.answers.append((number % len(uploads), response.content))

    async with anyio.create_task_group() as tasks:
        for client in clients:
            tasks.start_soon(worker, client)
    result.seconds = time.perf_counter() - started
    return result


def run(
    base_url: str,
    path: str,
    uploads: list[Upload],
    *,
    concurrency: int,
    requests: int,
    max_seconds: float,
    params: dict[str, str] | None = None,
    keep_answers: bool = False,
) -> LoadResult:
    """`drive` on a fresh event loop (uvloop when installed: it halves the loop's own cost)."""
    load = partial(
        drive,
        base_url,
        path,
        uploads,
        concurrency=concurrency,
        requests=requests,
        max_seconds=max_seconds,
        params=params,
        keep_answers=keep_answers,
    )
    uvloop = importlib.util.find_spec("uvloop") is not None
    return anyio.run(load, backend_options={"use_uvloop": uvloop})


def face_images(folder: Path | None, count: int, seed: int = 0) -> tuple[list[bytes], str]:
    """`count` JPEG face chips from a UTKFace folder, else the astronaut's face; and a label.

    The bytes stay in memory: nothing is copied anywhere.
    """
    if folder is not None and folder.is_dir():
        names = sorted(path.name for path in folder.glob("*.jpg"))
        if names:
            chosen = random.Random(seed).sample(names, min(count, len(names)))
            return [(folder / name).read_bytes() for name in chosen], f"{len(chosen)} UTKFace chips"
    from PIL import Image
    from skimage import data

    face = data.astronaut()[20:200, 150:310]  # her face and a margin, like a UTKFace chip
    buffer = io.BytesIO()
    Image.fromarray(face).resize((200, 200)).save(buffer, "JPEG", quality=90)
    return [buffer.getvalue()], "scikit-image's astronaut face (200x200)"


def main(argv: list[str] | None = None) -> int:
    """Drive a running server once and print images/s and latency percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base_url", help="e.g. http://127.0.0.1:8000 (loopback only)")
    parser.add_argument("--path", default="/predict")
    parser.add_argument("--images", type=Path, help="UTKFace folder (default: the astronaut)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=30)
    parser.add_argument("--detect", default="skip")
    args = parser.parse_args(argv)
    images, label = face_images(args.images, 64)
    uploads = [multipart("file", [image]) for image in images]
    result = run(
        args.base_url,
        args.path,
        uploads,
        concurrency=args.concurrency,
        requests=args.requests,
        max_seconds=args.max_seconds,
        params={"detect": args.detect},
    )
    print(
        f"{label}: {result.requests} requests in {result.seconds:.1f} s, "
        f"{result.images_per_second:.1f} images/s, p50 {result.percentile_ms(50):.1f} ms, "
        f"p95 {result.percentile_ms(95):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, "
        f"statuses {dict(result.statuses)}, transport errors {result.transport_errors}"
    )
    return 0 if result.statuses.keys() <= {200} and not result.transport_errors else 1


if __name__ == "__main__":
    sys.exit(main())
