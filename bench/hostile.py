"""Attack bench: what a hostile client did to `facedemo serve`, replayed row by row on loopback.

    git worktree add /tmp/facedemo-baseline 8b07e32       # the code before the fix, once
    python -m bench.hostile --checkout /tmp/facedemo-baseline --json /tmp/hostile-before.json
    python -m bench.hostile --json /tmp/hostile-after.json          # this repository's code
    python -m bench.hostile --rows 1,3                              # a subset of the rows
    python -m bench.hostile --report /tmp/hostile-before.json /tmp/hostile-after.json

Each row starts its own `facedemo serve` from --checkout (default: this repository) with this
interpreter, PYTHONPATH=CHECKOUT/src and FACEDEMO_MODELS_DIR=CHECKOUT/models, every other
FACEDEMO_* variable removed (default settings) but FACEDEMO_LOG_LEVEL=info; before the first row
it checks that `import facedemo` resolves to CHECKOUT/src, so that an editable install of another
tree cannot win. The server's log goes to --log-dir (default: a new temporary folder, printed and
left in place). The server's RSS and open file descriptors are read from /proc/PID/status and
/proc/PID/fd every 0.1 s while a row runs. Traffic goes to 127.0.0.1 only, every loop is bounded
in count and time, and every socket and the server are closed at the end of a row, also on an
error, Ctrl-C or SIGTERM. All six rows take about 8 minutes (the first run builds 32 photos for
row 6 and caches them in --photo-cache, outside the repository, about 2 minutes more).

1. idle flood: 3,000 connections that send nothing and 300 that send a request line a byte every
   2 s, held 30 s after the last one opened; meanwhile, every second, GET /readyz and a face crop
   POST /predict?detect=skip on fresh connections (5 s client timeout). Reports their latency and
   failures, the server's fd count, and how many of the 3,300 sockets the server closed (recv
   gives b"" or ECONNRESET) within 30 s of their opening, and when.
2. short body: POST /predict declaring Content-Length 100000 and sending 1,000 bytes, then
   silence; what comes back, and when (40 s at most).
3. aborted uploads: 20 uploads of a 2 MB multipart body cut off half-way (alternately a close and
   an RST through SO_LINGER 0); the 5xx (and 499) added to facedemo_http_requests_total on
   /metrics, and the tracebacks added to the server's log.
4. expensive images, one at a time, detect=auto: a 7800x5000 float32 TIFF (deflate), an
   8000x5000 16-bit grey PNG and a 7800x5000 RGB PNG, all black so that the files are small;
   status, problem code, seconds and the server's RSS rise (peak during the request over before).
5. fairness: a face crop (detect=skip) every 0.25 s for 15 s, unloaded; then the same for 30 s
   while 4 attackers each send one of row 4's images every 0.5 s, open loop, each request on its
   own connection with a 30 s limit. The normal client's p50, p95, max and refusals; the
   attackers' answers and their longest wait.
6. concurrent batches: 3 POST /predict/batch at once, each with the same 32 JPEG photos of
   6000x4000 pixels and about 9.5 MB (built once, cached); each batch's status (Retry-After of a
   503), the server's peak RSS rise and its RSS 60 s after the last answer, over before.

Targets (after the fix, issue 35): rows 1, 3, 5 and 6 as the issue sets them; rows 2 and 4 have
none in the issue, and the bench's own (an answer or a close within 40 s; 200 or problem+json
within 30 s and an RSS rise of at most 512 MiB) are marked so. The client shares the machine with
the server: on a 2-core machine shared with other work, latencies and RSS move from run to run.

Prints a Markdown table a row (figure, measured, target, PASS/FAIL); --json saves the figures,
and --report prints saved runs side by side (before, after). Exit status 1 when a figure fails
its target (expected before the fix) or the server could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
from bench.load import BOUNDARY, CONTENT_TYPE, Upload, multipart
from bench.readme import markdown_table
from bench.soak import free_port
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "utkface"
PHOTO_CACHE = Path(tempfile.gettempdir()) / "facedemo-hostile-photos"
HOST = "127.0.0.1"
PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024
SAMPLE_SECONDS = 0.1
REQUESTS_COUNTER = "facedemo_http_requests_total"  # labels method, route, status
TRACEBACK = "Traceback (most recent call last)"
# Row 1: the trickling sockets' request, a byte every 2 s (30 s send 15 bytes of it).
TRICKLE_REQUEST = b"GET /readyz HTTP/1.1\r\nHost: x\r\nUser-Agent: facedemo-hostile\r\n\r\n"


# ----------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured figure of a row, its target and whether it met it (None: no target)."""

    name: str
    measured: str
    target: str = "-"
    passed: bool | None = None
    value: Any = None  # the figure for --json: a number, a list or a mapping


@dataclass
class RowResult:
    """What one row measured."""

    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(figure.passed is False for figure in self.figures)


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else "PASS" if passed else "FAIL"


def format_row(row: RowResult) -> str:
    """The row as a Markdown heading, table and notes."""
    cells = [[f.name, f.measured, f.target, verdict(f.passed)] for f in row.figures]
    lines = [f"### {row.number}. {row.title}", ""]
    lines += markdown_table(["figure", "measured", "target", "verdict"], cells, text_columns=4)
    if row.notes:
        lines += ["", *(f"- {note}" for note in row.notes)]
    return "\n".join(lines)


def seconds_text(value: float) -> str:
    return "never" if value == float("inf") else f"{value:.2f} s"


def percentile(values: list[float], percent: float) -> float:
    """A percentile of `values` (inf counts as larger than all); nan when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(np.ceil(percent / 100 * len(ordered))) - 1)]


# ----------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class Server:
    """A running `facedemo serve`: its process id, port and log file."""

    pid: int
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port


def server_environment(checkout: Path) -> dict[str, str]:
    """Default settings, the checkout's source and models, info logging."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FACEDEMO_")}
    environment.update(
        PYTHONPATH=str(checkout / "src"),
        FACEDEMO_MODELS_DIR=str(checkout / "models"),
        FACEDEMO_LOG_LEVEL="info",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return environment


def check_import(checkout: Path) -> Path:
    """Where `import facedemo` resolves in the server's environment; it must be CHECKOUT/src."""
    found = subprocess.run(
        [sys.executable, "-c", "import facedemo; print(facedemo.__file__)"],
        env=server_environment(checkout),
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    package = Path(found).resolve().parent
    if package != (checkout / "src" / "facedemo").resolve():
        raise RuntimeError(f"import facedemo resolves to {package}, not {checkout}/src/facedemo")
    return package


def checkout_label(checkout: Path) -> str:
    """The checkout's commit, and whether its src/ has uncommitted changes."""

    def git(*command: str) -> str:
        done = subprocess.run(["git", *command], cwd=checkout, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "src")
    return f"{commit}{' with uncommitted changes in src/' if dirty else ''}"


@contextlib.contextmanager
def serving(checkout: Path, log: Path) -> Iterator[Server]:
    """`facedemo serve` from `checkout` on a free port, once /readyz answers; stopped on exit."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)],
            cwd=checkout,
            env=server_environment(checkout),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(process, f"http://{HOST}:{port}/readyz", timeout=300)
        yield Server(process.pid, port, log)
    finally:
        stop(process)


def wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fd_limit(pid: int) -> str:
    """The process's soft limit of open files, from /proc/PID/limits."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


# ----------------------------------------------------------------------------- /proc sampling


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    rss_mib: float
    fds: int


def read_sample(pid: int) -> Sample | None:
    """The process's RSS (VmRSS) and open fds now; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return Sample(time.monotonic(), int(line.split()[1]) / 1024, fds)
    return None


class Sampler:
    """The server's RSS and fd count every SAMPLE_SECONDS, on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.now()

    def now(self) -> Sample:
        """A sample taken now (also kept)."""
        sample = read_sample(self.pid)
        if sample is None:
            raise RuntimeError(f"the server (pid {self.pid}) is gone")
        self.samples.append(sample)
        return sample

    def window(self, start: float, end: float | None = None) -> list[Sample]:
        end = time.monotonic() if end is None else end
        return [s for s in self.samples if start <= s.at <= end]

    def peak_rss(self, start: float, end: float | None = None) -> float:
        return max((s.rss_mib for s in self.window(start, end)), default=float("nan"))

    def peak_fds(self, start: float, end: float | None = None) -> int:
        return max((s.fds for s in self.window(start, end)), default=0)

    def fd_timeline(self, start: float, step: float) -> list[tuple[float, int]]:
        """(seconds since `start`, fds) about every `step` seconds."""
        timeline: list[tuple[float, int]] = []
        for sample in self.window(start):
            if not timeline or sample.at - start >= timeline[-1][0] + step:
                timeline.append((round(sample.at - start, 1), sample.fds))
        return timeline


# ----------------------------------------------------------------------------- requests


@dataclass
class Outcome:
    """How one request ended: status (None: no answer), problem code, seconds, error."""

    seconds: float
    status: int | None = None
    code: str | None = None
    problem: bool = False
    retry_after: str | None = None
    error: str | None = None
    summary: str | None = None

    @property
    def label(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        return f"{self.status} {self.code}" if self.code else str(self.status)


def outcome_of(response: httpx.Response, seconds: float) -> Outcome:
    problem = response.headers.get("content-type", "").startswith(PROBLEM_JSON)
    code = None
    if problem:
        with contextlib.suppress(ValueError, AttributeError):
            code = response.json().get("code")
    retry_after = response.headers.get("retry-after")
    return Outcome(seconds, response.status_code, code, problem, retry_after)


async def timed(
    request: Callable[[], Awaitable[httpx.Response]],
    timeout: float,
    summarize: Callable[[httpx.Response], str] | None = None,
) -> Outcome:
    """Await `request()` for at most `timeout` seconds, end to end."""
    started = time.perf_counter()
    try:
        response = await asyncio.wait_for(request(), timeout)
    except (httpx.HTTPError, TimeoutError, OSError) as error:
        return Outcome(time.perf_counter() - started, error=type(error).__name__)
    outcome = outcome_of(response, time.perf_counter() - started)
    if summarize is not None:
        outcome.summary = summarize(response)
    return outcome


async def on_schedule(
    count: int, interval: float, start: float, send: Callable[[int], Awaitable[Outcome]]
) -> list[Outcome]:
    """Open loop: request `number` is sent at start + number * interval, whatever came back."""
    tasks = []
    for number in range(count):
        delay = start + number * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(number)))
    return list(await asyncio.gather(*tasks))


def fresh_connections(timeout: float) -> httpx.AsyncClient:
    """A client that opens a connection for every request and keeps none."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


def post_upload(
    client: httpx.AsyncClient, url: str, upload: Upload
) -> Callable[[], Awaitable[httpx.Response]]:
    headers = {"content-type": CONTENT_TYPE}
    return lambda: client.post(url, content=upload.body, headers=headers)


def latency_figures(name: str, outcomes: list[Outcome], worst_limit: float) -> list[Figure]:
    """Worst and median seconds (failures at the time they took) and the failures."""
    seconds = [o.seconds for o in outcomes]
    worst, median = max(seconds, default=float("nan")), float(np.median(seconds))
    failures = [o for o in outcomes if o.status != 200]
    kinds = Counter(o.label for o in failures)
    return [
        Figure(
            f"{name}: worst / median",
            f"{worst:.2f} / {median:.2f} s",
            f"worst <= {worst_limit:g} s",
            worst <= worst_limit,
            {"worst": worst, "median": median},
        ),
        Figure(
            f"{name}: failures",
            f"{len(failures)} of {len(outcomes)}"
            + (f" ({', '.join(f'{k}: {n}' for k, n in kinds.items())})" if kinds else ""),
            "0",
            not failures,
            len(failures),
        ),
    ]


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Expensive:
    """An image that is small to send and large to decode."""

    label: str
    filename: str
    content_type: str
    data: bytes

    @cached_property
    def upload(self) -> Upload:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{self.filename}"\r\nContent-Type: {self.content_type}\r\n\r\n'
        ).encode()
        return Upload(head + self.data + f"\r\n--{BOUNDARY}--\r\n".encode(), 1)


def encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def expensive_images() -> list[Expensive]:
    """Row 4's images, black (so that they compress to a few hundred KB), built in memory."""
    tiff = Image.fromarray(np.zeros((5000, 7800), np.float32))  # mode F
    grey16 = Image.fromarray(np.zeros((5000, 8000), np.uint16))  # mode I;16
    rgb = Image.new("RGB", (7800, 5000))
    return [
        Expensive(
            "float32 TIFF 7800x5000",
            "float.tiff",
            "image/tiff",
            encoded(tiff, "TIFF", compression="tiff_deflate"),
        ),
        Expensive("16-bit grey PNG 8000x5000", "grey16.png", "image/png", encoded(grey16, "PNG")),
        Expensive("8-bit RGB PNG 7800x5000", "rgb.png", "image/png", encoded(rgb, "PNG")),
    ]


def synthetic_photo(width: int, height: int, noise: int, seed: int) -> np.ndarray:
    """Smooth colour waves plus uniform noise of +-`noise` levels: a JPEG of tunable size."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    pixels = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, 500):  # in strips: a few hundred MB of temporaries at most
        y = np.linspace(top / height, min(top + 500, height) / height, min(500, height - top))
        y = y.astype(np.float32)[:, None]
        for channel in range(3):
            wave = 120 + 80 * np.sin(6 * x + 2 * y + phase[channel])
            speckle = rng.integers(-noise, noise + 1, wave.shape, dtype=np.int16)
            pixels[top : top + 500, :, channel] = np.clip(wave + speckle, 0, 255)
    return pixels


def jpeg_size(pixels: np.ndarray) -> int:
    return len(encoded(Image.fromarray(pixels), "JPEG", quality=95))


def noise_for(target_bytes: int, width: int, height: int) -> int:
    """The noise amplitude whose 6000x4000-type photo is closest to `target_bytes` from below,
    measured on a quarter-size tile (JPEG size grows with the area at the same content)."""
    low, high = 1, 64
    while low < high:  # the largest amplitude whose estimate stays at most the target
        middle = (low + high + 1) // 2
        estimate = 4 * jpeg_size(synthetic_photo(width // 2, height // 2, middle, 0))
        low, high = (middle, high) if estimate <= target_bytes else (low, middle - 1)
    return low


def batch_photos(cache: Path, count: int = 32, size: tuple[int, int] = (6000, 4000)) -> list[Path]:
    """`count` JPEG photos of `size` and about 9.5 MB in `cache`, built the first time."""
    if cache.resolve().is_relative_to(ROOT):
        raise ValueError(f"the photo cache must be outside the repository, not {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    paths = [cache / f"photo-{number:02d}-{size[0]}x{size[1]}.jpg" for number in range(count)]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        print(f"building {len(missing)} photos in {cache} (once) ...", flush=True)
        noise = noise_for(9_500_000, *size)
        for path in missing:
            seed = paths.index(path) + 1
            data = encoded(Image.fromarray(synthetic_photo(*size, noise, seed)), "JPEG", quality=95)
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.rename(path)
    return paths


@dataclass(frozen=True)
class FileBody:
    """A multipart body of files on disk, streamed in 1 MiB chunks; its length known first."""

    pieces: tuple[bytes | Path, ...]

    @classmethod
    def of(cls, field_name: str, paths: list[Path]) -> FileBody:
        pieces: list[bytes | Path] = []
        for path in paths:
            pieces.append(
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"; '
                f'filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            )
            pieces += [path, b"\r\n"]
        return cls((*pieces, f"--{BOUNDARY}--\r\n".encode()))

    @property
    def length(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in self.pieces)

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            with piece.open("rb") as file:
                while chunk := file.read(MIB):
                    yield chunk


class Inputs:
    """What the rows send, each built when a row first needs it."""

    def __init__(self, images: Path, photo_cache: Path) -> None:
        self.images, self.photo_cache = images, photo_cache

    @cached_property
    def chip(self) -> bytes:
        """A 200x200 UTKFace chip (the first by name)."""
        chips = sorted(self.images.glob("*.jpg"))
        if not chips:
            raise FileNotFoundError(f"no UTKFace chips (*.jpg) in {self.images}")
        return chips[0].read_bytes()

    @cached_property
    def chip_upload(self) -> Upload:
        return multipart("file", [self.chip])

    @cached_property
    def expensive(self) -> list[Expensive]:
        return expensive_images()

    @cached_property
    def photos(self) -> list[Path]:
        return batch_photos(self.photo_cache)


# ----------------------------------------------------------------------------- row 1


@dataclass
class HeldSocket:
    """A client connection held open by the flood."""

    sock: socket.socket
    trickle: bool
    opened: float  # time.monotonic()
    closed_after: float = float("inf")  # seconds from opening to the server's close
    first_bytes: bytes = b""
    sent: int = 0


async def connect(address: tuple[str, int], timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def watch(held: HeldSocket) -> None:
    """Read until the server closes the connection (b"" or a reset), and note when."""
    loop = asyncio.get_running_loop()
    try:
        while data := await loop.sock_recv(held.sock, 4096):
            held.first_bytes = held.first_bytes or data[:40]
    except OSError:  # ECONNRESET and the like: closed by the server all the same
        pass
    held.closed_after = time.monotonic() - held.opened


async def trickle(sockets: list[HeldSocket], until: float, interval: float = 2.0) -> None:
    """A byte of TRICKLE_REQUEST to each open trickling socket every `interval` seconds."""
    while time.monotonic() < until:
        for held in sockets:
            if held.closed_after == float("inf") and held.sent < len(TRICKLE_REQUEST):
                with contextlib.suppress(OSError):  # a closed socket: `watch` notes it
                    held.sent += held.sock.send(TRICKLE_REQUEST[held.sent : held.sent + 1])
        await asyncio.sleep(max(0.0, min(interval, until - time.monotonic())))


async def probes(server: Server, chip: Upload, until: float) -> dict[str, list[Outcome]]:
    """GET /readyz and a face crop POST /predict?detect=skip every second until `until`."""
    start = time.monotonic()
    count = max(1, int(until - start))
    async with fresh_connections(timeout=5) as client:
        readyz = f"{server.base_url}/readyz"
        predict = post_upload(client, f"{server.base_url}/predict?detect=skip", chip)
        ready, predicted = await asyncio.gather(
            on_schedule(count, 1.0, start, lambda _: timed(lambda: client.get(readyz), 5)),
            on_schedule(count, 1.0, start, lambda _: timed(predict, 5)),
        )
    return {"GET /readyz": ready, "POST /predict?detect=skip": predicted}


async def flood(
    server: Server, chip: Upload, idle: int, slow: int, hold: float
) -> tuple[list[HeldSocket], int, dict[str, list[Outcome]], float]:
    """Open the sockets, probe while they are held, close them all; (sockets, connections that
    could not be opened, probes, when the last socket opened)."""
    held: list[HeldSocket] = []
    watchers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(128)  # connects in flight: the server's backlog is 2048
    failed = 0

    async def open_one(trickling: bool) -> None:
        nonlocal failed
        async with gate:
            try:
                sock = await connect(server.address, timeout=10)
            except (OSError, TimeoutError):
                failed += 1
                return
        held.append(HeldSocket(sock, trickling, time.monotonic()))
        watchers.append(asyncio.create_task(watch(held[-1])))

    background: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(open_one(number >= idle) for number in range(idle + slow)))
        opened = time.monotonic()
        until = opened + hold
        background.append(asyncio.create_task(trickle([h for h in held if h.trickle], until)))
        outcomes = await probes(server, chip, until)
        await asyncio.sleep(max(0.0, until - time.monotonic()))
    finally:
        for task in watchers + background:
            task.cancel()
        await asyncio.gather(*watchers, *background, return_exceptions=True)
        for socket_ in held:
            socket_.sock.close()
    return held, failed, outcomes, opened


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def row_idle_flood(server: Server, inputs: Inputs) -> RowResult:
    idle, slow, hold, window = 3000, 300, 30.0, 30.0
    if raise_fd_limit(idle + slow + 256) < idle + slow + 256:
        raise RuntimeError("RLIMIT_NOFILE's hard limit is too low for 3,300 sockets")
    row = RowResult(1, "Idle flood: 3,000 silent and 300 trickling connections, held 30 s")
    with Sampler(server.pid) as sampler:
        start = sampler.now()
        held, failed, outcomes, opened = asyncio.run(
            flood(server, inputs.chip_upload, idle, slow, hold)
        )
        time.sleep(3)
        after = sampler.now()
        peak = sampler.peak_fds(start.at)
        timeline = sampler.fd_timeline(start.at, 5.0)
    for name, results in outcomes.items():
        row.figures += latency_figures(name, results, worst_limit=2.0)
    closes = [h.closed_after for h in held] + [float("inf")] * failed
    closed = sum(seconds <= window for seconds in closes)
    share = closed / len(closes)
    median, p95 = percentile(closes, 50), percentile(closes, 95)
    row.figures += [
        Figure(
            "server fds: start / peak / 3 s after the client closed",
            f"{start.fds} / {peak} / {after.fds}",
            value={"start": start.fds, "peak": peak, "after": after.fds},
        ),
        Figure(
            f"sockets the server closed within {window:.0f} s",
            f"{100 * share:.1f}% ({closed} of {len(closes)})",
            ">= 95%",
            share >= 0.95,
            share,
        ),
        Figure(
            "seconds to the server's close: median / p95",
            f"{seconds_text(median)} / {seconds_text(p95)}",
            f"p95 <= {window:.0f} s",
            p95 <= window,
            {
                "median": None if median == float("inf") else median,
                "p95": None if p95 == float("inf") else p95,
            },
        ),
        Figure("connections the client could not open", str(failed), "-", None, failed),
    ]
    answers = Counter(h.first_bytes.split(b"\r\n")[0].decode("latin-1") for h in held)
    answers.pop("", None)
    row.notes += [
        f"{len(held)} sockets opened in {opened - start.at:.1f} s, held {hold:.0f} s after the "
        f"last; the server's open-files limit: {fd_limit(server.pid)}",
        "server fds about every 5 s: " + ", ".join(f"{t:.0f} s: {n}" for t, n in timeline),
        "what the server sent before closing: "
        + (", ".join(f"{line!r}: {n}" for line, n in answers.items()) or "nothing"),
    ]
    return row


# ----------------------------------------------------------------------------- row 2


def wait_for_answer(sock: socket.socket, limit: float) -> tuple[str, float | None, float | None]:
    """(first line the server sent or "", seconds to it, seconds to its close), up to `limit`."""
    started = time.monotonic()
    first_line, answered, closed = "", None, None
    received = b""
    while (left := limit - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            data = b""
        if not data:
            closed = time.monotonic() - started
            break
        if answered is None:
            answered = time.monotonic() - started
        received += data
        first_line = received.split(b"\r\n")[0].decode("latin-1")
    return first_line, answered, closed


def row_short_body(server: Server, inputs: Inputs) -> RowResult:
    declared, sent, limit = 100_000, 1000, 40.0
    row = RowResult(2, f"Short body: Content-Length {declared:,}, {sent:,} bytes sent, silence")
    body = multipart("file", [inputs.chip]).body[:sent]
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(head + body)
        first_line, answered, closed = wait_for_answer(sock, limit)
    if answered is not None:
        text = f"{first_line!r} after {answered:.1f} s"
        text += f", closed after {closed:.1f} s" if closed is not None else ", left open"
    elif closed is not None:
        text = f"closed without an answer after {closed:.1f} s"
    else:
        text = f"nothing in {limit:.0f} s, connection still open"
    ended = min(t for t in (answered, closed, float("inf")) if t is not None)
    row.figures.append(
        Figure(
            "what came back, and when",
            text,
            f"an answer or a close within {limit:.0f} s (bench's target)",
            ended <= limit,
            {"first_line": first_line, "answered": answered, "closed": closed},
        )
    )
    return row


# ----------------------------------------------------------------------------- row 3


def requests_by_status(server: Server) -> Counter[str]:
    """facedemo_http_requests_total summed by status label, from /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS_COUNTER:
                counts[sample.labels.get("status", "?")] += int(sample.value)
    return counts


def tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count(TRACEBACK)


def abort_upload(server: Server, head: bytes, body: bytes, reset: bool) -> None:
    """Send the head and half the body, then close (with an RST if `reset`)."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.1)  # let the server start reading the body
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def row_aborted_uploads(server: Server, inputs: Inputs) -> RowResult:
    count, size = 20, 2_000_000
    row = RowResult(3, f"Aborted uploads: {count} bodies of 2 MB cut off half-way")
    noise = np.random.default_rng(3).bytes(size - len(inputs.chip))
    body = multipart("file", [inputs.chip + noise]).body
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n"
        f"Content-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    before, before_tracebacks = requests_by_status(server), tracebacks(server.log)
    for number in range(count):
        abort_upload(server, head, body, reset=number % 2 == 1)
    time.sleep(3)  # the server notices the disconnects
    added = requests_by_status(server)
    added.subtract(before)
    added = Counter({status: n for status, n in added.items() if n})
    server_errors = sum(n for status, n in added.items() if status.startswith("5"))
    new_tracebacks = tracebacks(server.log) - before_tracebacks
    row.figures += [
        Figure(
            f'{REQUESTS_COUNTER}{{status="5xx"}} added',
            f"+{server_errors}",
            "0",
            server_errors == 0,
            server_errors,
        ),
        Figure(
            "tracebacks added to the server log",
            f"+{new_tracebacks}",
            "0",
            new_tracebacks == 0,
            new_tracebacks,
        ),
        Figure(
            f'{REQUESTS_COUNTER}{{status="499"}} added',
            f"+{added['499']}",
            f"+{count} (expected after the fix)",
            added["499"] == count,
            added["499"],
        ),
    ]
    row.notes.append(
        "statuses added: "
        + (", ".join(f"{s}: +{n}" for s, n in sorted(added.items())) or "none")
        + f"; half the uploads closed, half reset (SO_LINGER 0); body {len(body):,} bytes"
    )
    return row


# ----------------------------------------------------------------------------- row 4


def row_expensive_images(server: Server, inputs: Inputs) -> RowResult:
    row = RowResult(4, "Expensive images, one at a time, detect=auto")
    with Sampler(server.pid) as sampler, httpx.Client(timeout=120) as client:
        for image in inputs.expensive:
            time.sleep(1)
            before = sampler.now()
            try:
                response = client.post(
                    f"{server.base_url}/predict",
                    params={"detect": "auto"},
                    content=image.upload.body,
                    headers={"content-type": CONTENT_TYPE, "connection": "close"},
                )
                outcome = outcome_of(response, time.monotonic() - before.at)
            except httpx.HTTPError as error:
                outcome = Outcome(time.monotonic() - before.at, error=type(error).__name__)
            rise = max(sampler.peak_rss(before.at), sampler.now().rss_mib) - before.rss_mib
            row.figures += expensive_figures(image, outcome, rise)
    return row


def expensive_figures(image: Expensive, outcome: Outcome, rise: float) -> list[Figure]:
    ended = (outcome.status == 200 or outcome.problem) and outcome.seconds <= 30
    return [
        Figure(
            f"{image.label} ({len(image.data) / 1000:.0f} KB): answer",
            f"{outcome.label} in {outcome.seconds:.1f} s",
            "200 or problem+json within 30 s (bench's target)",
            ended,
            asdict(outcome),
        ),
        Figure(
            f"{image.label}: server RSS rise",
            f"{rise:+.0f} MiB",
            "<= 512 MiB (bench's target)",
            rise <= 512,
            rise,
        ),
    ]


# ----------------------------------------------------------------------------- row 5


async def normal_client(server: Server, chip: Upload, seconds: float) -> list[Outcome]:
    """A face crop every 0.25 s for `seconds`, each on its own connection, 30 s at most."""
    async with fresh_connections(timeout=30) as client:
        predict = post_upload(client, f"{server.base_url}/predict?detect=skip", chip)
        count = int(seconds / 0.25)
        return await on_schedule(count, 0.25, time.monotonic(), lambda _: timed(predict, 30))


async def attacker(
    server: Server, images: list[Expensive], offset: int, start: float, seconds: float
) -> list[Outcome]:
    """One of row 4's images every 0.5 s (in turn), each on its own connection, 30 s at most."""
    async with fresh_connections(timeout=30) as client:
        url = f"{server.base_url}/predict"

        def send(number: int) -> Awaitable[Outcome]:
            image = images[(number + offset) % len(images)]
            return timed(post_upload(client, url, image.upload), 30)

        return await on_schedule(int(seconds / 0.5), 0.5, start, send)


async def attack(
    server: Server, chip: Upload, images: list[Expensive], attackers: int, seconds: float
) -> tuple[list[Outcome], list[Outcome]]:
    """(normal client's outcomes, attackers' outcomes) of one attack."""
    start = time.monotonic()
    waves = [
        attacker(server, images, number, start + number * 0.125, seconds)
        for number in range(attackers)
    ]
    normal, *attacks = await asyncio.gather(normal_client(server, chip, seconds), *waves)
    return normal, [outcome for wave in attacks for outcome in wave]


def row_fairness(server: Server, inputs: Inputs) -> RowResult:
    attackers, seconds = 4, 30.0
    row = RowResult(
        5, f"Fairness: a normal client beside {attackers} attackers sending row 4's images"
    )
    images = inputs.expensive  # built before the clock starts
    asyncio.run(normal_client(server, inputs.chip_upload, 1.0))  # warm-up, not counted
    unloaded = [o.seconds for o in asyncio.run(normal_client(server, inputs.chip_upload, 15.0))]
    base_p50, base_p95 = percentile(unloaded, 50), percentile(unloaded, 95)
    with Sampler(server.pid) as sampler:
        start = sampler.now()
        normal, attacks = asyncio.run(
            attack(server, inputs.chip_upload, images, attackers, seconds)
        )
        peak = sampler.peak_rss(start.at)
    row.figures += normal_figures(normal, base_p50, base_p95)
    row.figures += attacker_figures(attacks)
    row.notes.append(
        f"latencies of all requests (a refusal or a timeout at the time it took); server RSS "
        f"{start.rss_mib:.0f} MiB before the attack, peak {peak:.0f} MiB"
    )
    return row


def normal_figures(normal: list[Outcome], base_p50: float, base_p95: float) -> list[Figure]:
    seconds = [o.seconds for o in normal]
    p50, p95, worst = percentile(seconds, 50), percentile(seconds, 95), max(seconds)
    limit = max(3 * base_p50, base_p50 + 0.1)
    refused = sum(o.status != 200 for o in normal)
    kinds = Counter(o.label for o in normal if o.status != 200)
    return [
        Figure(
            "unloaded normal client: p50 / p95",
            f"{1000 * base_p50:.0f} / {1000 * base_p95:.0f} ms",
            value={"p50": base_p50, "p95": base_p95},
        ),
        Figure(
            "normal client under attack: p50",
            f"{1000 * p50:.0f} ms",
            f"<= {1000 * limit:.0f} ms (max(3x, +100 ms) unloaded)",
            p50 <= limit,
            p50,
        ),
        Figure(
            "normal client under attack: p95", f"{1000 * p95:.0f} ms", "< 2000 ms", p95 < 2, p95
        ),
        Figure("normal client under attack: max", f"{1000 * worst:.0f} ms", value=worst),
        Figure(
            "normal client under attack: refused (non-200)",
            f"{100 * refused / len(normal):.1f}% ({refused} of {len(normal)})"
            + (f": {', '.join(f'{k}: {n}' for k, n in kinds.items())}" if kinds else ""),
            "<= 5%",
            refused <= 0.05 * len(normal),
            refused / len(normal),
        ),
    ]


def attacker_figures(attacks: list[Outcome]) -> list[Figure]:
    kinds = Counter(o.label for o in attacks)
    longest = max((o.seconds for o in attacks if o.status is not None), default=float("nan"))
    unended = [o for o in attacks if not (o.status == 200 or o.problem) or o.seconds > 30]
    return [
        Figure(
            "attackers: answers",
            ", ".join(f"{k}: {n}" for k, n in kinds.most_common()),
            value=dict(kinds),
        ),
        Figure(
            "attackers: longest time to an answer",
            seconds_text(longest),
            "<= 30 s",
            longest <= 30,
            longest,
        ),
        Figure(
            "attackers: all ended within 30 s as 200 or problem+json",
            "yes" if not unended else f"no: {len(unended)} of {len(attacks)} did not",
            "yes",
            not unended,
            len(unended),
        ),
    ]


# ----------------------------------------------------------------------------- row 6


def batch_summary(response: httpx.Response) -> str:
    if response.status_code != 200:
        return ""
    items = response.json().get("items", [])
    errors = Counter(item["error"].get("code") for item in items if item.get("error"))
    return f"{len(items)} items" + (f", errors {dict(errors)}" if errors else "")


async def send_batches(server: Server, body: FileBody, count: int) -> list[Outcome]:
    """`count` POST /predict/batch of `body` at once, each on its own connection, 300 s at most."""
    headers = {"content-type": CONTENT_TYPE, "content-length": str(body.length)}
    async with fresh_connections(timeout=300) as client:
        url = f"{server.base_url}/predict/batch"

        def post() -> Awaitable[httpx.Response]:
            return client.post(url, content=body.chunks(), headers=headers)

        def send(_: int) -> Awaitable[Outcome]:
            return timed(post, 300, batch_summary)

        return await on_schedule(count, 0.0, time.monotonic(), send)


def row_concurrent_batches(server: Server, inputs: Inputs) -> RowResult:
    count, settle = 3, 60.0
    photos = inputs.photos
    body = FileBody.of("files", photos)
    row = RowResult(6, f"Concurrent batches: {count} x /predict/batch of {len(photos)} photos")
    with Sampler(server.pid) as sampler:
        time.sleep(1)
        before = sampler.now()
        outcomes = asyncio.run(send_batches(server, body, count))
        answered = time.monotonic()
        peak = sampler.peak_rss(before.at)
        time.sleep(settle)
        after = sampler.now()
    for number, outcome in enumerate(outcomes, 1):
        text = f"{outcome.label} in {outcome.seconds:.1f} s"
        if outcome.status == 503:
            text += f", Retry-After: {outcome.retry_after}"
        if outcome.summary:
            text += f" ({outcome.summary})"
        ok = outcome.status == 200 or (outcome.status == 503 and outcome.retry_after is not None)
        row.figures.append(
            Figure(f"batch {number}", text, "200, or 503 with Retry-After", ok, asdict(outcome))
        )
    rise, left = peak - before.rss_mib, after.rss_mib - before.rss_mib
    row.figures += [
        Figure("server peak RSS rise", f"{rise:+.0f} MiB", "<= 1024 MiB", rise <= 1024, rise),
        Figure(
            f"server RSS {settle:.0f} s after the last answer, over before",
            f"{left:+.0f} MiB",
            "<= 300 MiB",
            left <= 300,
            left,
        ),
    ]
    sizes = [path.stat().st_size / 1e6 for path in photos]
    row.notes.append(
        f"photos: {len(photos)} JPEG 6000x4000 quality 95, {min(sizes):.2f}-{max(sizes):.2f} MB "
        f"(cached in {photos[0].parent}); body {body.length / 1e6:.0f} MB a batch, detect=auto "
        f"(the default); RSS before {before.rss_mib:.0f} MiB; last answer "
        f"{answered - before.at:.0f} s after the first byte"
    )
    return row


# ----------------------------------------------------------------------------- main

ROWS: dict[int, tuple[str, Callable[[Server, Inputs], RowResult]]] = {
    1: ("idle flood", row_idle_flood),
    2: ("short body", row_short_body),
    3: ("aborted uploads", row_aborted_uploads),
    4: ("expensive images", row_expensive_images),
    5: ("fairness", row_fairness),
    6: ("concurrent batches", row_concurrent_batches),
}


def row_numbers(text: str) -> list[int]:
    numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    unknown = [n for n in numbers if n not in ROWS]
    if unknown or not numbers:
        raise argparse.ArgumentTypeError(f"rows are 1-{len(ROWS)}, comma-separated: {text!r}")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile",
        description="Replay a hostile client's attacks on a `facedemo serve` it starts from "
        "--checkout (loopback only, bounded), and print each row's figures beside its target.",
        epilog="Rows: "
        + "; ".join(f"{n}: {title}" for n, (title, _) in ROWS.items())
        + ". See the module docstring (bench/hostile.py) for what each row sends.",
    )
    parser.add_argument(
        "--checkout",
        type=Path,
        default=ROOT,
        help="facedemo tree whose src/ and models/ are served (default: this one)",
    )
    parser.add_argument(
        "--rows",
        type=row_numbers,
        default=list(ROWS),
        help="comma-separated rows to run, e.g. 1,3 (default: all)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="save the figures as JSON")
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help=f"UTKFace chips folder (default: {DEFAULT_IMAGES})",
    )
    parser.add_argument(
        "--photo-cache",
        type=Path,
        default=PHOTO_CACHE,
        help=f"where row 6's photos are built once (default: {PHOTO_CACHE})",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="where the servers' logs go (default: a new temporary folder)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print saved runs (before [after]) side by side; runs nothing",
    )
    args = parser.parse_args(argv)
    args.command_line = "python -m bench.hostile " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every row's clean-up, as Ctrl-C does


def run_rows(args: argparse.Namespace, checkout: Path, log_dir: Path) -> list[RowResult]:
    inputs = Inputs(args.images, args.photo_cache)
    results = []
    for number in args.rows:
        title, measure = ROWS[number]
        print(f"row {number}: {title}: starting the server ...", flush=True)
        with serving(checkout, log_dir / f"row{number}.log") as server:
            started = time.monotonic()
            result = measure(server, inputs)
        print(
            format_row(result),
            f"\n(row {number}: {time.monotonic() - started:.0f} s)\n",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(compare([json.loads(path.read_text()) for path in args.report]))
        return 0
    checkout = args.checkout.resolve()
    package = check_import(checkout)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="facedemo-hostile-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    label = checkout_label(checkout)
    print(f"serving {checkout} ({label}); import facedemo -> {package}; logs in {log_dir}")
    load_before, started = os.getloadavg()[0], time.monotonic()
    results = run_rows(args, checkout, log_dir)
    summary = {
        "command": args.command_line,
        "checkout": str(checkout),
        "commit": label,
        "cores": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.monotonic() - started, 1),
        "rows": [asdict(result) for result in results],
    }
    print(
        f"{len(results)} rows in {summary['seconds']:.0f} s; 1-minute load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if any(result.failed for result in results) else 0


def compare(runs: list[dict[str, Any]]) -> str:
    """Markdown tables of saved runs side by side: figure, target, then each run's figure."""
    names = ["before", "after", *(f"run {n}" for n in range(3, len(runs) + 1))][: len(runs)]
    pairs = zip(names, runs, strict=True)
    lines = [f"- {name}: `{run['command']}` ({run['commit']})" for name, run in pairs]
    numbers = sorted({row["number"] for run in runs for row in run["rows"]})
    for number in numbers:
        rows = [next((r for r in run["rows"] if r["number"] == number), None) for run in runs]
        first = next(row for row in rows if row is not None)
        cells: dict[str, list[str]] = {}
        for index, row in enumerate(rows):
            for figure in row["figures"] if row else []:
                entry = cells.setdefault(figure["name"], [figure["target"]] + ["-"] * len(runs))
                entry[1 + index] = f"{figure['measured']} ({verdict(figure['passed'])})"
        table = [[name, *entry] for name, entry in cells.items()]
        lines += ["", f"### {number}. {first['title']}", ""]
        lines += markdown_table(["figure", "target", *names], table, text_columns=2 + len(runs))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
