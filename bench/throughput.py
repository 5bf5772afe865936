"""Throughput of `facedemo serve` with dynamic batching off and on, in one run, with a table.

    python -m bench.throughput --write-readme              # models/ if it has bundles, else fails
    python -m bench.throughput --tiny                      # tiny random-weight bundles instead

In one run, on 127.0.0.1 only:

1. the registry in-process: images/s of `Registry.predict` at batch sizes 1..32 (the ceiling);
2. `facedemo serve` with FACEDEMO_MAX_BATCH_SIZE=1 (batching off), then =32 (on): POST /predict
   at concurrency 1, 8 and 32, for detect=skip and detect=auto, each cell bounded by
   --requests and --seconds; the mean batch size of each cell comes from the server's /metrics;
3. with batching on, POST /predict/batch with 32 images a request, and the server's RSS after the
   warm-up and again after --memory-requests more requests of /predict;
4. a no-op FastAPI multipart endpoint (bench/noop_app.py) under the same uvicorn settings at the
   same concurrencies: what HTTP alone costs.

The images are real faces: --images (default ../shared/data/utkface) UTKFace chips, read into
memory and never copied, or scikit-image's astronaut face when that folder is missing. It prints
a table and the issue's targets, and with --write-readme puts them into bench/README.md under
"## Throughput". Exit status 1 if a server failed to start or answered anything but 200.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from bench.load import LoadResult, Upload, face_images, multipart
from bench.load import run as run_load
from bench.readme import markdown_table, write_section
from bench.soak import free_port, rss_mib
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Throughput"
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "utkface"
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Row:
    """One measured cell of the table."""

    server: str
    endpoint: str
    detect: str
    result: LoadResult
    mean_batch: float | None

    def cells(self) -> list[str]:
        """The row as table cells."""
        result = self.result
        others = sum(count for status, count in result.statuses.items() if status != 200)
        batch = "-" if self.mean_batch is None else f"{self.mean_batch:.1f}"
        return [
            self.server,
            self.endpoint,
            self.detect,
            str(result.concurrency),
            str(result.requests),
            f"{result.images_per_second:.1f}",
            f"{result.percentile_ms(50):.1f}",
            f"{result.percentile_ms(95):.1f}",
            f"{result.percentile_ms(99):.1f}",
            batch,
            str(others + result.transport_errors),
        ]


# ----------------------------------------------------------------------------- in-process


def registry_throughput(
    models_dir: Path, images: list[bytes], min_seconds: float
) -> dict[int, float]:
    """Images/s of Registry.predict at each padded batch size, on the serving crops."""
    from facedemo.config import DEFAULT_MAX_IMAGE_PIXELS
    from facedemo.imaging import decode_image, resize_rgb
    from facedemo.registry import Registry

    registry = Registry.load(models_dir)
    crops = np.stack(
        [
            resize_rgb(decode_image(data, max_pixels=DEFAULT_MAX_IMAGE_PIXELS), registry.input_size)
            for data in images
        ]
    )
    crops = np.concatenate([crops] * math.ceil(max(BATCH_SIZES) / len(crops)))
    rates = {}
    for size in BATCH_SIZES:
        batch = crops[:size]
        registry.predict(batch)
        calls, started = 0, time.perf_counter()
        while calls < 5 or time.perf_counter() - started < min_seconds:
            registry.predict(batch)
            calls += 1
        rates[size] = size * calls / (time.perf_counter() - started)
    return rates


# ----------------------------------------------------------------------------- servers


@contextmanager
def server(
    command: list[str], environment: dict[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, once `ready_url` answers 200; SIGTERM and a wait on the way out."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}; see {log}")
            try:
                if httpx.get(ready_url, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} was not ready in time; see {log}")
            time.sleep(0.5)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def batch_totals(base_url: str) -> tuple[float, float]:
    """(faces, model calls) so far, from the server's facedemo_batch_size_faces histogram."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    totals = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for kind in totals:
                if sample.name == f"facedemo_batch_size_faces_{kind}":
                    totals[kind] = sample.value
    return totals["sum"], totals["count"]


def measure(
    base_url: str,
    path: str,
    uploads: list[Upload],
    *,
    concurrency: int,
    requests: int,
    seconds: float,
    params: dict[str, str] | None,
    with_metrics: bool = True,
    keep_answers: bool = False,
) -> tuple[LoadResult, float | None]:
    """A warm-up, then one bounded run; and the mean batch size the server saw during it."""
    warm_up = min(2 * concurrency, 64)
    run_load(
        base_url,
        path,
        uploads,
        concurrency=concurrency,
        requests=warm_up,
        max_seconds=60,
        params=params,
    )
    before = batch_totals(base_url) if with_metrics else (0.0, 0.0)
    result = run_load(
        base_url,
        path,
        uploads,
        concurrency=concurrency,
        requests=requests,
        max_seconds=seconds,
        params=params,
        keep_answers=keep_answers,
    )
    if not with_metrics:
        return result, None
    after = batch_totals(base_url)
    calls = after[1] - before[1]
    return result, (after[0] - before[0]) / calls if calls else None


def facedemo_environment(models_dir: Path, max_batch_size: int) -> dict[str, str]:
    """The environment of a `facedemo serve` under test."""
    return {
        **os.environ,
        "FACEDEMO_MODELS_DIR": str(models_dir),
        "FACEDEMO_MAX_BATCH_SIZE": str(max_batch_size),
        "FACEDEMO_LOG_LEVEL": "warning",  # an access line per request would measure the log
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


# ----------------------------------------------------------------------------- the run


def run(args: argparse.Namespace, models_dir: Path, scratch: Path) -> tuple[str, bool]:
    """Every measurement of the module docstring; the report and whether all answers were 200."""
    images, images_label = face_images(args.images, 64)
    singles = [multipart("file", [image]) for image in images]
    batches = [
        multipart("files", [images[(start + k) % len(images)] for k in range(32)])
        for start in range(0, 64, 32)
    ]
    log = scratch / "servers.log"
    print(f"images: {images_label}; models: {args.models_label}", flush=True)

    print("registry in-process ...", flush=True)
    in_process = registry_throughput(models_dir, images, args.registry_seconds)
    rows: list[Row] = []
    rss: dict[str, float] = {}
    memory_requests = 0

    for label, max_batch_size in (("batching off", 1), ("batching on", 32)):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)]
        environment = facedemo_environment(models_dir, max_batch_size)
        with server(command, environment, f"{base_url}/readyz", log) as process:
            if max_batch_size > 1:  # warm every path once, then take the starting RSS
                for detect in args.detect:
                    measure(
                        base_url,
                        "/predict",
                        singles,
                        concurrency=32,
                        requests=64,
                        seconds=60,
                        params={"detect": detect},
                    )
                measure(
                    base_url,
                    "/predict/batch",
                    batches,
                    concurrency=2,
                    requests=4,
                    seconds=60,
                    params={"detect": "skip"},
                )
                rss["start"] = rss_mib(process.pid)
            for detect in args.detect:
                for concurrency in args.concurrency:
                    print(
                        f"{label}: /predict detect={detect} concurrency={concurrency} ...",
                        flush=True,
                    )
                    result, mean_batch = measure(
                        base_url,
                        "/predict",
                        singles,
                        concurrency=concurrency,
                        requests=args.requests,
                        seconds=args.seconds,
                        params={"detect": detect},
                    )
                    rows.append(Row(label, "/predict", detect, result, mean_batch))
            if max_batch_size > 1:
                for concurrency in (1, 4):
                    print(f"{label}: /predict/batch concurrency={concurrency} ...", flush=True)
                    result, mean_batch = measure(
                        base_url,
                        "/predict/batch",
                        batches,
                        concurrency=concurrency,
                        requests=max(8, args.requests // 32),
                        seconds=args.seconds,
                        params={"detect": "skip"},
                    )
                    rows.append(
                        Row(label, "/predict/batch (32 images)", "skip", result, mean_batch)
                    )
                print(
                    f"{label}: {args.memory_requests} requests for the memory check ...", flush=True
                )
                memory = run_load(
                    base_url,
                    "/predict",
                    singles,
                    concurrency=32,
                    requests=args.memory_requests,
                    max_seconds=args.memory_seconds,
                    params={"detect": "skip"},
                )
                memory_requests = memory.requests
                rss["end"] = rss_mib(process.pid)

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.noop_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with server(command, dict(os.environ), f"{base_url}/openapi.json", log):
        for concurrency in args.concurrency:
            print(f"no-op upload: concurrency={concurrency} ...", flush=True)
            result, _ = measure(
                base_url,
                "/upload",
                singles,
                concurrency=concurrency,
                requests=args.requests,
                seconds=args.seconds,
                params=None,
                with_metrics=False,
            )
            rows.append(Row("no-op FastAPI", "/upload", "-", result, None))

    report = format_report(args, images_label, in_process, rows, rss, memory_requests)
    clean = all(
        set(row.result.statuses) <= {200} and not row.result.transport_errors for row in rows
    )
    return report, clean


def find(rows: list[Row], server: str, endpoint: str, detect: str, concurrency: int) -> Row | None:
    """The row of one cell, if it was measured."""
    for row in rows:
        if (row.server, row.endpoint, row.detect, row.result.concurrency) == (
            server,
            endpoint,
            detect,
            concurrency,
        ):
            return row
    return None


def format_report(
    args: argparse.Namespace,
    images_label: str,
    in_process: dict[int, float],
    rows: list[Row],
    rss: dict[str, float],
    memory_requests: int,
) -> str:
    """The Markdown section: set-up, the table, the registry's figures and the targets."""
    header = [
        "server",
        "endpoint",
        "detect",
        "concurrency",
        "requests",
        "images/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "mean batch",
        "non-200",
    ]
    lines = [
        f"Command: `{args.command_line}`",
        "",
        f"- machine: {os.cpu_count()} CPU cores, load generator on the same machine; models: "
        f"{args.models_label}; images: {images_label}",
        f"- each cell: a warm-up, then up to {args.requests} requests or {args.seconds:.0f} s, "
        "closed loop (each worker waits for its answer); latencies are of 200 answers",
        "",
        *markdown_table(header, [row.cells() for row in rows], text_columns=3),
    ]
    best_size = max(in_process, key=lambda size: in_process[size])
    lines += [
        "",
        "Registry in-process (`Registry.predict`, both models, on the same crops): "
        + ", ".join(f"batch {size}: {rate:.1f} images/s" for size, rate in in_process.items()),
        "",
        "Targets (issue 5):",
    ]
    off = find(rows, "batching off", "/predict", "skip", 32)
    on = find(rows, "batching on", "/predict", "skip", 32)
    if off and on:
        speedup = on.result.images_per_second / max(off.result.images_per_second, 1e-9)
        p50, p99 = on.result.percentile_ms(50), on.result.percentile_ms(99)
        off_p99 = off.result.percentile_ms(99)
        lines += [
            f"- batching on vs off, concurrency 32, detect=skip: "
            f"{on.result.images_per_second:.1f} vs {off.result.images_per_second:.1f} images/s "
            f"= {speedup:.2f}x (target >= 2x): {_verdict(speedup >= 2)}",
            f"- p99 on {p99:.1f} ms vs off {off_p99:.1f} ms (target: no worse): "
            f"{_verdict(p99 <= off_p99)}",
            f"- p99 / p50 on = {p99:.1f} / {p50:.1f} = {p99 / p50:.2f} (target <= 3): "
            f"{_verdict(p99 <= 3 * p50)}",
        ]
    batch_rows = [row for row in rows if row.endpoint.startswith("/predict/batch")]
    if batch_rows:
        best_batch = max(row.result.images_per_second for row in batch_rows)
        ratio = best_batch / in_process[best_size]
        lines.append(
            f"- /predict/batch end to end {best_batch:.1f} images/s vs registry in-process "
            f"{in_process[best_size]:.1f} (batch {best_size}) = {ratio:.2f} (target >= 0.5): "
            f"{_verdict(ratio >= 0.5)}"
        )
    if "start" in rss and "end" in rss:
        growth = 100 * (rss["end"] - rss["start"]) / rss["start"]
        lines.append(
            f"- server RSS {rss['start']:.1f} MiB after the warm-up, {rss['end']:.1f} MiB after "
            f"every cell and {memory_requests} more requests: {growth:+.1f}% (target < 10%): "
            f"{_verdict(growth < 10)}"
        )
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main(argv: list[str] | None = None) -> int:
    """Run every measurement; print the report; exit 1 on a failed server or a non-200."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--tiny", action="store_true", help="serve tiny random-weight bundles")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--detect", nargs="+", default=["skip", "auto"], choices=["skip", "auto"])
    parser.add_argument("--requests", type=int, default=2000, help="most requests per cell")
    parser.add_argument("--seconds", type=float, default=15, help="most seconds per cell")
    parser.add_argument("--registry-seconds", type=float, default=3)
    parser.add_argument("--memory-requests", type=int, default=5000)
    parser.add_argument("--memory-seconds", type=float, default=300)
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    args.command_line = "python -m bench.throughput " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    with tempfile.TemporaryDirectory(prefix="facedemo-throughput-") as scratch:
        if args.tiny:
            from tests.bundles import write_tiny_bundles

            models_dir = Path(scratch) / "models"
            write_tiny_bundles(models_dir)
            args.models_label = "tiny random-weight bundles (32x32)"
        else:
            models_dir = args.models_dir.resolve()
            args.models_label = f"{os.path.relpath(models_dir, ROOT)}/ (trained bundles)"
        report, clean = run(args, models_dir, Path(scratch))
    print(report)
    if args.write_readme:
        write_section(
            SECTION,
            "Dynamic batching off and on, against the registry in-process and a no-op FastAPI "
            "upload endpoint (bench/throughput.py; the load generator is bench/load.py).",
            report,
        )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
