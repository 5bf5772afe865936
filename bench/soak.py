"""Bounded soak of `facedemo serve` on loopback: mixed good and bad requests, statuses and RSS.

    python -m bench.soak --tiny                       # tiny random-weight bundles (no training)
    python -m bench.soak --models-dir models          # the real bundles
    python -m bench.soak --tiny --requests 3000 --concurrency 16 --max-seconds 600 --write-readme

Starts the server as a subprocess on 127.0.0.1, waits for /readyz, warms up, then sends
`--requests` requests (or stops at `--max-seconds`) from `--concurrency` workers over a fixed,
seeded mix of inputs: good JPEGs and PNGs, truncated JPEGs, random bytes, uploads over the byte
limit, SVG, PDF, a text/plain body, JSON, a missing file field, two files, an empty file, a
decompression bomb, an unknown query value, and GETs of /models and /readyz. It counts the
statuses per input kind, samples the server's RSS (VmRSS) after the warm-up, halfway and at the
end, stops the server with SIGTERM and checks it exits 0. Exit status 1 on any 5xx, any
unexpected status, or a failed shutdown. `--write-readme` puts the table into bench/README.md
under "## Soak".
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
from bench.readme import write_section
from PIL import Image

SECTION = "## Soak"


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how to send it, and the statuses it may get."""

    name: str
    weight: int
    send: Callable[[httpx.AsyncClient], Any]
    expected: frozenset[int]


def jpeg(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png() -> bytes:
    """A PNG whose header declares 30000x30000 pixels over one byte of data."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def build_mix(detect: str, max_upload_bytes: int) -> list[Kind]:
    """The request kinds with their weights; the byte payloads are built once."""
    good_jpegs = [jpeg(side, seed) for seed, side in enumerate((64, 128, 256, 480))]
    good_pngs = [png(side, seed) for seed, side in enumerate((48, 160))]
    truncated = [data[: len(data) // 2] for data in good_jpegs]
    noise = np.random.default_rng(99).bytes(20_000)
    huge = b"\xff\xd8" + bytes(max_upload_bytes + 1024)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
    bomb = bomb_png()
    params = {"detect": detect}

    def upload(data: bytes | Callable[[], bytes], name: str = "face.jpg") -> Any:
        def send(client: httpx.AsyncClient) -> Any:
            payload = data() if callable(data) else data
            return client.post("/predict", params=params, files={"file": (name, payload)})

        return send

    def pick(choices: list[bytes]) -> Callable[[], bytes]:
        return lambda: random.choice(choices)

    return [
        Kind("good jpeg", 30, upload(pick(good_jpegs)), frozenset({200})),
        Kind("good png", 10, upload(pick(good_pngs), "face.png"), frozenset({200})),
        Kind("truncated jpeg", 6, upload(pick(truncated)), frozenset({400})),
        Kind("random bytes", 6, upload(noise), frozenset({400})),
        Kind("over the byte limit", 3, upload(huge), frozenset({413})),
        Kind("svg", 4, upload(svg, "image.svg"), frozenset({415})),
        Kind("pdf", 3, upload(pdf, "doc.pdf"), frozenset({415})),
        Kind("decompression bomb", 3, upload(bomb, "bomb.png"), frozenset({413})),
        Kind("empty file", 3, upload(b""), frozenset({400})),
        Kind(
            "text/plain body",
            4,
            lambda client: client.post(
                "/predict", params=params, content=b"hello", headers={"content-type": "text/plain"}
            ),
            frozenset({415}),
        ),
        Kind(
            "json body",
            4,
            lambda client: client.post("/predict", params=params, json={"file": "aGVsbG8="}),
            frozenset({415}),
        ),
        Kind(
            "missing file field",
            4,
            lambda client: client.post(
                "/predict", params=params, files={"photo": ("a.jpg", good_jpegs[0])}
            ),
            frozenset({422}),
        ),
        Kind(
            "two files",
            3,
            lambda client: client.post(
                "/predict",
                params=params,
                files=[("file", ("a.jpg", good_jpegs[0])), ("file", ("b.jpg", good_jpegs[1]))],
            ),
            frozenset({413}),
        ),
        Kind(
            "detect=banana",
            3,
            lambda client: client.post(
                "/predict", params={"detect": "banana"}, files={"file": ("a.jpg", good_jpegs[0])}
            ),
            frozenset({422}),
        ),
        Kind("GET /models", 5, lambda client: client.get("/models"), frozenset({200})),
        Kind("GET /readyz", 5, lambda client: client.get("/readyz"), frozenset({200})),
    ]


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Tally:
    """Outcomes per kind: statuses, transport errors, and the first surprise."""

    statuses: dict[str, Counter[int]]
    transport_errors: Counter[str]
    unexpected: list[str]
    done: int = 0


async def run_load(
    base_url: str,
    mix: list[Kind],
    total: int,
    concurrency: int,
    deadline: float,
    tally: Tally,
    on_halfway: Callable[[], None],
) -> None:
    """Send `total` requests drawn from `mix` with `concurrency` workers, until the deadline."""
    rng = random.Random(1234)
    plan = rng.choices(mix, weights=[kind.weight for kind in mix], k=total)
    queue = iter(plan)
    halfway = total // 2
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for kind in queue:
                if time.monotonic() > deadline:
                    return
                try:
                    response = await kind.send(client)
                except httpx.TransportError as error:
                    tally.transport_errors[f"{kind.name}: {type(error).__name__}"] += 1
                else:
                    tally.statuses[kind.name][response.status_code] += 1
                    if response.status_code not in kind.expected and len(tally.unexpected) < 5:
                        tally.unexpected.append(
                            f"{kind.name}: {response.status_code} {response.text[:200]}"
                        )
                tally.done += 1
                if tally.done == halfway:
                    on_halfway()

        async with anyio.create_task_group() as tasks:
            for _ in range(concurrency):
                tasks.start_soon(worker)


def wait_until_ready(base_url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the server did not become ready in time")


def format_report(
    args: argparse.Namespace,
    mix: list[Kind],
    tally: Tally,
    rss: dict[str, float],
    seconds: float,
    exit_status: int | None,
) -> str:
    all_statuses = Counter[int]()
    for counts in tally.statuses.values():
        all_statuses.update(counts)
    server_errors = sum(count for status, count in all_statuses.items() if status >= 500)
    growth = 100 * (rss["end"] - rss["after warm-up"]) / rss["after warm-up"]
    lines = [
        f"Command: `{args.command_line}`",
        "",
        f"- requests: {tally.done} in {seconds:.1f} s ({tally.done / seconds:.1f}/s), "
        f"concurrency {args.concurrency}, models: {args.models_label}, detect={args.detect}",
        f"- statuses: {', '.join(f'{s}: {c}' for s, c in sorted(all_statuses.items()))}; "
        f"5xx: {server_errors}; transport errors: {sum(tally.transport_errors.values())}",
        f"- server RSS (MiB): after warm-up {rss['after warm-up']:.1f}, halfway "
        f"{rss['halfway']:.1f}, end {rss['end']:.1f}; growth {growth:+.1f}%",
        f"- SIGTERM afterwards: exit status {exit_status}",
        "",
        "| input | sent | statuses | expected |",
        "| --- | ---: | --- | --- |",
    ]
    for kind in mix:
        counts = tally.statuses[kind.name]
        errors = sum(c for name, c in tally.transport_errors.items() if name.startswith(kind.name))
        seen = ", ".join(f"{status}: {count}" for status, count in sorted(counts.items()))
        if errors:
            seen += f", transport error: {errors}"
        expected = ", ".join(str(status) for status in sorted(kind.expected))
        lines.append(f"| {kind.name} | {sum(counts.values()) + errors} | {seen} | {expected} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the report; exit 1 on any 5xx, surprise or unclean shutdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models-dir", type=Path, help="folder of model bundles to serve")
    source.add_argument("--tiny", action="store_true", help="serve tiny random-weight bundles")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--warmup", type=int, default=100, help="requests before the first RSS")
    parser.add_argument("--detect", default="skip", help="detect= for predictions (skip, auto)")
    parser.add_argument("--max-upload-bytes", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    args.command_line = "python -m bench.soak " + " ".join(argv or sys.argv[1:])

    with tempfile.TemporaryDirectory(prefix="facedemo-soak-") as scratch:
        if args.tiny:
            from tests.bundles import write_tiny_bundles

            models_dir = Path(scratch) / "models"
            write_tiny_bundles(models_dir)
            args.models_label = "tiny random-weight bundles (32x32)"
        else:
            models_dir = args.models_dir.resolve()
            args.models_label = str(args.models_dir)
        return soak(args, models_dir, Path(scratch))


def soak(args: argparse.Namespace, models_dir: Path, scratch: Path) -> int:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "FACEDEMO_MODELS_DIR": str(models_dir),
        "FACEDEMO_MAX_UPLOAD_BYTES": str(args.max_upload_bytes),
        "FACEDEMO_LOG_LEVEL": "warning",  # a line per request would only measure the terminal
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = scratch / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    exit_status: int | None = None
    try:
        wait_until_ready(base_url, server, timeout=300)
        mix = build_mix(args.detect, args.max_upload_bytes)
        warmup = Tally({kind.name: Counter() for kind in mix}, Counter(), [])
        anyio.run(
            run_load,
            base_url,
            mix,
            args.warmup,
            args.concurrency,
            float("inf"),
            warmup,
            lambda: None,
        )
        rss = {"after warm-up": rss_mib(server.pid)}
        tally = Tally({kind.name: Counter() for kind in mix}, Counter(), [])
        started = time.monotonic()

        def sample_halfway() -> None:
            rss["halfway"] = rss_mib(server.pid)

        anyio.run(
            run_load,
            base_url,
            mix,
            args.requests,
            args.concurrency,
            started + args.max_seconds,
            tally,
            sample_halfway,
        )
        seconds = time.monotonic() - started
        rss["end"] = rss_mib(server.pid)
        rss.setdefault("halfway", rss["end"])
        server.send_signal(signal.SIGTERM)
        exit_status = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    report = format_report(args, mix, tally, rss, seconds, exit_status)
    print(report)
    for surprise in tally.unexpected:
        print(f"unexpected: {surprise}", file=sys.stderr)
    if args.write_readme:
        write_section(
            SECTION,
            "A bounded soak of `facedemo serve` on loopback (bench/soak.py): a seeded mix of good "
            "and bad requests; zero 5xx and a flat RSS are the pass marks.",
            report,
        )
    server_errors = sum(
        count
        for counts in tally.statuses.values()
        for status, count in counts.items()
        if status >= 500
    )
    failed = server_errors or tally.unexpected or exit_status != 0
    if failed:
        print(log.read_text()[-3000:], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
