"""facedemo against its peers in one run: one table of images/s, p50 and p99, and the ratios.

    python -m bench.peers                         # UTKFace from ../shared/data/utkface
    python -m bench.peers --baseline d3b19ef      # also facedemo as it was at that commit
    python -m bench.peers --baseline d3b19ef --write-readme

Two workloads, each sent to every server below by bench/load.py (closed loop, loopback only):

- **skip chips**: POST /predict?detect=skip with 64 UTKFace chips (200x200 JPEG), concurrency 32;
- **auto photos**: POST /predict?detect=auto with 16 group photos of 1920x1280 pixels and 3-5
  faces each, made at run time from UTKFace chips by bench/photos.py, concurrency 8. The share of
  the pasted faces that each server's answers found is the "faces found" column.

Servers, all started before the first cell and idle but the one being measured; each cell is
measured in --rounds rounds with the servers taking turns, so that the shared machine's other
load falls on all of them alike, and its figures pool the rounds:

- `facedemo serve` with default settings (only FACEDEMO_MODELS_DIR set);
- the same with FACEDEMO_MAX_BATCH_SIZE=1 (batching off);
- with --baseline REV: `facedemo serve` from that commit's src/ (git archive into a temporary
  folder), default settings, so that a change is measured against the code before it, in one run;
- the seed-style peer (bench/seed_app.py: Flask, the upload saved to disk, `load_img`,
  `model.predict` per model and request; the stock mtcnn for detect=auto);
- the no-op upload endpoint (bench/noop_app.py): what HTTP and multipart alone cost;
- in-process (no server): `Pipeline.predict_images` on 32 chips or 8 photos a call, one thread,
  the models called directly: the ceiling of each workload on this machine.

Beside images/s and latency, each cell has the CPU the server spent an image (in-process: the
bench's own) and how busy the machine's cores were while it ran (bench/cpu.py): a server that
keeps every core busy is limited by its CPU a request, one that leaves cores idle by waiting.

Every figure of a run comes from that run: the machine is shared, so compare ratios, not runs.
Exit status 1 when a server failed to start or answered anything but 200.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import CpuUse, cpu_sample
from bench.load import LoadResult, Upload, face_images, multipart
from bench.load import run as run_load
from bench.photos import GroupPhoto, group_photos, recall
from bench.readme import markdown_table, write_section
from bench.soak import free_port
from bench.throughput import DEFAULT_IMAGES, server

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Against peers"
CHIPS, PHOTOS = "skip chips", "auto photos"
DEFAULT = "facedemo, default settings"
BATCHING_OFF = "facedemo, batching off"
SEED = "seed-style peer (Flask)"
NOOP = "no-op upload endpoint"
IN_PROCESS = "in-process Pipeline.predict_images"


@dataclass(frozen=True)
class Workload:
    """What is sent: the uploads, the detect mode, the concurrency, and the photos' truth."""

    name: str
    uploads: list[Upload]
    detect: str
    concurrency: int
    images: list[bytes]
    photos: list[GroupPhoto] | None  # the true faces of each upload, for detect=auto


@dataclass(frozen=True)
class Row:
    """One measured cell."""

    server: str
    workload: Workload
    images_per_second: float
    result: LoadResult | None  # None in-process
    found: tuple[int, int] | None  # faces found, faces pasted
    cpu_ms: float | None  # CPU ms an image of the server (in-process: the bench), if known
    machine_busy: float | None  # the busy share of all cores while it ran (0..1), if known

    def cells(self) -> list[str]:
        """The row as table cells."""
        result = self.result
        if result is None:
            timing = ["-", "-", "-", "-", "-"]
        else:
            p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
            others = sum(n for status, n in result.statuses.items() if status != 200)
            timing = [
                str(result.requests),
                f"{p50:.0f}",
                f"{p99:.0f}",
                f"{p99 / p50:.2f}",
                str(others + result.transport_errors),
            ]
        found = "-"
        if self.found is not None:
            found = f"{self.found[0]}/{self.found[1]} ({100 * self.found[0] / self.found[1]:.1f}%)"
        concurrency = "-" if result is None else str(result.concurrency)
        cpu_ms = "-" if self.cpu_ms is None else f"{self.cpu_ms:.1f}"
        busy = "-" if self.machine_busy is None else f"{100 * self.machine_busy:.0f}%"
        return [
            self.workload.name,
            self.server,
            concurrency,
            f"{self.images_per_second:.1f}",
            *timing[1:4],
            cpu_ms,
            busy,
            found,
            timing[0],
            timing[4],
        ]


# ----------------------------------------------------------------------------- servers


def facedemo_server(
    models_dir: Path, src: Path | None = None, **settings: str
) -> Callable[[int], tuple[list[str], dict[str, str], str]]:
    """`facedemo serve` (from `src` when given) with default settings but `settings`."""

    def command(port: int) -> tuple[list[str], dict[str, str], str]:
        environment = {**os.environ, "FACEDEMO_MODELS_DIR": str(models_dir), **settings}
        if src is not None:
            environment["PYTHONPATH"] = str(src)
        serve = [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)]
        return serve, environment, "/readyz"

    return command


def seed_server(models_dir: Path) -> Callable[[int], tuple[list[str], dict[str, str], str]]:
    """The seed-style Flask peer."""

    def command(port: int) -> tuple[list[str], dict[str, str], str]:
        serve = [sys.executable, "-m", "bench.seed_app", "--port", str(port)]
        return [*serve, "--models-dir", str(models_dir)], dict(os.environ), "/"

    return command


def noop_server(port: int) -> tuple[list[str], dict[str, str], str]:
    """The no-op FastAPI upload endpoint, under uvicorn as `facedemo serve` runs."""
    serve = [sys.executable, "-m", "uvicorn", "bench.noop_app:app", "--host", "127.0.0.1"]
    return [*serve, "--port", str(port), "--no-access-log"], dict(os.environ), "/openapi.json"


def faces_found(workload: Workload, result: LoadResult) -> tuple[int, int] | None:
    """Pasted faces that the answers' boxes found, over all answers of the run."""
    if workload.photos is None or not result.answers:
        return None
    found = pasted = 0
    for index, body in result.answers:
        photo = workload.photos[index]
        boxes = []
        for face in json.loads(body).get("faces", []):
            box = face["box"]
            if isinstance(box, dict):  # facedemo: {"x", "y", "width", "height"}
                box = [box["x"], box["y"], box["width"], box["height"]]
            boxes.append(tuple(float(value) for value in box))
        found += recall(photo, boxes)
        pasted += len(photo.faces)
    return found, pasted


def merged(results: list[LoadResult]) -> LoadResult:
    """One result of several runs at the same concurrency: latencies, answers and time pooled."""
    total = LoadResult(concurrency=results[0].concurrency)
    for result in results:
        total.seconds += result.seconds
        total.latencies += result.latencies
        total.statuses.update(result.statuses)
        total.transport_errors += result.transport_errors
        total.images += result.images
        total.answers += result.answers
    return total


def measure_rounds(
    servers: list[tuple[str, str, str, int]], workloads: list[Workload], args: argparse.Namespace
) -> list[Row]:
    """Every (server, workload) cell, `args.rounds` times in turn, so that the machine's other
    load falls on all servers alike; each cell pools its rounds. `servers` are (label, base
    URL, path, process id), all running."""
    runs: dict[tuple[str, str], list[LoadResult]] = {}
    cpu: dict[tuple[str, str], list[CpuUse | None]] = {}
    for round_number in range(args.rounds):
        for label, base_url, path, pid in servers:
            for workload in workloads:
                print(f"round {round_number + 1}: {label}: {workload.name} ...", flush=True)
                params = None if path == "/upload" else {"detect": workload.detect}
                keep = workload.photos is not None and path != "/upload"
                if round_number == 0:  # warm-up, not counted
                    run_load(
                        base_url,
                        path,
                        workload.uploads,
                        concurrency=workload.concurrency,
                        requests=min(2 * workload.concurrency, 64),
                        max_seconds=60,
                        params=params,
                    )
                before = cpu_sample(pid)
                result = run_load(
                    base_url,
                    path,
                    workload.uploads,
                    concurrency=workload.concurrency,
                    requests=args.requests,
                    max_seconds=args.seconds,
                    params=params,
                    keep_answers=keep,
                )
                runs.setdefault((label, workload.name), []).append(result)
                use = CpuUse.between(before, cpu_sample(pid))
                cpu.setdefault((label, workload.name), []).append(use)
    rows = []
    for label, _, _, _ in servers:
        for workload in workloads:
            result = merged(runs[(label, workload.name)])
            found = faces_found(workload, result)
            use = per_image(CpuUse.total(cpu[(label, workload.name)]), result.images)
            rows.append(Row(label, workload, result.images_per_second, result, found, *use))
    return rows


def per_image(cpu: CpuUse | None, images: int) -> tuple[float | None, float | None]:
    """(CPU ms an image, machine busy share) of a cell's `cpu`, or Nones where not known."""
    if cpu is None or not images:
        return None, None
    return 1000 * cpu.process_seconds / images, cpu.machine_busy


def in_process(models_dir: Path, workloads: list[Workload], seconds: float) -> list[Row]:
    """Images/s of Pipeline.predict_images with the registry called directly, one thread."""
    from facedemo.config import Settings
    from facedemo.detect_mode import DetectMode
    from facedemo.detection import load_detector
    from facedemo.pipeline import Pipeline
    from facedemo.registry import Registry
    from facedemo.schemas import PredictResponse

    settings = Settings(models_dir=models_dir)
    registry = Registry.from_settings(settings)
    pipeline = Pipeline(registry, settings, load_detector(settings, registry.device))
    rows = []
    for workload in workloads:
        print(f"in-process: {workload.name} ...", flush=True)
        chunk = 32 if workload.photos is None else 8
        detect = DetectMode(workload.detect)
        pipeline.predict_images(workload.images[:chunk], detect)  # warm-up
        images, found, pasted, started = 0, 0, 0, time.perf_counter()
        before = cpu_sample(os.getpid())
        while images < len(workload.images) or time.perf_counter() - started < seconds:
            start = images % len(workload.images)
            indices = [(start + k) % len(workload.images) for k in range(chunk)]
            answers = pipeline.predict_images([workload.images[i] for i in indices], detect)
            images += chunk
            for index, answer in zip(indices, answers, strict=True):
                if workload.photos is not None and isinstance(answer, PredictResponse):
                    photo = workload.photos[index]
                    boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in answer.faces]
                    found += recall(photo, boxes)
                    pasted += len(photo.faces)
        rate = images / (time.perf_counter() - started)
        use = per_image(CpuUse.between(before, cpu_sample(os.getpid())), images)
        truth = (found, pasted) if pasted else None
        rows.append(Row(IN_PROCESS, workload, rate, None, truth, *use))
    return rows


def baseline_source(revision: str, scratch: Path) -> tuple[Path, str]:
    """src/ of facedemo at `revision`, checked out into `scratch`; and its short commit."""
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", revision], cwd=ROOT, check=True, capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    archive = subprocess.run(
        ["git", "archive", revision, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    return scratch / "src", commit


# ----------------------------------------------------------------------------- report


def find(rows: list[Row], server: str, workload: str) -> Row | None:
    """The row of one cell, if it was measured."""
    return next((r for r in rows if r.server == server and r.workload.name == workload), None)


def ratios(rows: list[Row], baseline: str | None) -> list[str]:
    """The ratios the issue asks for, each with its verdict where the issue sets a target."""
    # (peer, target on images/s) per workload; the tail targets are for chips only.
    targets: dict[str, list[tuple[str | None, float | None]]] = {
        CHIPS: [
            (BATCHING_OFF, 1.0),
            (baseline, 1.5),
            (SEED, 20.0),
            (NOOP, None),
            (IN_PROCESS, None),
        ],
        PHOTOS: [
            (BATCHING_OFF, None),
            (baseline, 2.0),
            (SEED, None),
            (NOOP, None),
            (IN_PROCESS, None),
        ],
    }
    lines = []
    for workload, peers in targets.items():
        ours = find(rows, DEFAULT, workload)
        if ours is None or ours.result is None:
            continue
        rate, result = ours.images_per_second, ours.result
        p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
        parts = [f"p99/p50 {p99 / p50:.2f}"]
        if workload == CHIPS:
            parts[0] += f" (target <= 3: {_verdict(p99 <= 3 * p50)})"
        for peer, target in peers:
            other = find(rows, peer, workload) if peer else None
            if other is None or other.images_per_second <= 0:
                continue
            ratio = rate / other.images_per_second
            text = f"{ratio:.2f}x the images/s of {peer}"
            if target is not None:
                text += f" (target >= {target:g}x: {_verdict(ratio >= target)})"
            if peer == BATCHING_OFF and other.result is not None:
                off_p99 = other.result.percentile_ms(99)
                text += f", p99 {p99:.0f} against {off_p99:.0f} ms"
                if workload == CHIPS:
                    text += f" (target: no worse: {_verdict(p99 <= off_p99)})"
            if peer == baseline and ours.found and other.found:
                share = [found / pasted for found, pasted in (ours.found, other.found)]
                text += f", faces found {100 * share[0]:.1f}% against {100 * share[1]:.1f}%"
            parts.append(text)
        lines.append(f"- {workload}: " + "; ".join(parts))
    return lines


def format_report(args: argparse.Namespace, rows: list[Row], labels: dict[str, str]) -> str:
    """The Markdown section: set-up, the table and the ratios."""
    header = [
        "workload",
        "server",
        "concurrency",
        "images/s",
        "p50 ms",
        "p99 ms",
        "p99/p50",
        "CPU ms/image",
        "machine busy",
        "faces found",
        "requests",
        "non-200",
    ]
    lines = [
        f"Command: `{args.command_line}`",
        "",
        f"- machine: {os.cpu_count()} CPU cores, shared; load generator on the same machine; "
        f"1-minute load average {labels['load_before']} before, {labels['load_after']} after",
        f"- models: {os.path.relpath(args.models_dir.resolve(), ROOT)}/; chips: "
        f"{labels['chips']}; photos: {labels['photos']}",
        f"- servers all running at once, idle but the one measured; each cell: a warm-up, then "
        f"{args.rounds} rounds of up to {args.requests} requests or {args.seconds:.0f} s, the "
        "servers taking turns in each round, so that the machine's other load falls on all "
        "alike; a cell's figures pool its rounds",
        "",
        *markdown_table(header, [row.cells() for row in rows], text_columns=2),
    ]
    lines += ["", "Ratios (facedemo with default settings against each):", ""]
    lines += ratios(rows, labels.get("baseline"))
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Measure every server on both workloads; print the table; exit 1 on a non-200."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="UTKFace folder")
    parser.add_argument("--baseline", help="a git revision of facedemo to measure beside")
    parser.add_argument("--chips-concurrency", type=int, default=32)
    parser.add_argument("--photos-concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="times each cell is measured")
    parser.add_argument("--requests", type=int, default=2000, help="most requests per round")
    parser.add_argument("--seconds", type=float, default=8, help="most seconds per round")
    parser.add_argument("--skip-seed", action="store_true", help="leave out the Flask peer")
    parser.add_argument("--write-readme", action="store_true", help="update bench/README.md")
    args = parser.parse_args(argv)
    args.command_line = "python -m bench.peers " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if not args.images.is_dir():
        parser.error(f"no UTKFace folder at {args.images}: the group photos are made from it")

    chips, chips_label = face_images(args.images, 64)
    photos = group_photos(args.images, 16)
    workloads = [
        Workload(
            CHIPS,
            [multipart("file", [chip]) for chip in chips],
            "skip",
            args.chips_concurrency,
            chips,
            None,
        ),
        Workload(
            PHOTOS,
            [multipart("file", [photo.jpeg]) for photo in photos],
            "auto",
            args.photos_concurrency,
            [photo.jpeg for photo in photos],
            photos,
        ),
    ]
    labels = {
        "chips": chips_label,
        "photos": f"{len(photos)} group photos 1920x1280, "
        f"{sum(len(photo.faces) for photo in photos)} faces (bench/photos.py)",
        "load_before": _load_average(),
    }
    models_dir = args.models_dir.resolve()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="facedemo-peers-") as scratch:
        log = Path(scratch) / "servers.log"
        commands = [
            (DEFAULT, facedemo_server(models_dir), "/predict"),
            (BATCHING_OFF, facedemo_server(models_dir, FACEDEMO_MAX_BATCH_SIZE="1"), "/predict"),
        ]
        if args.baseline:
            src, commit = baseline_source(args.baseline, Path(scratch))
            labels["baseline"] = f"facedemo at {commit}, default settings"
            commands.append((labels["baseline"], facedemo_server(models_dir, src), "/predict"))
        if not args.skip_seed:
            commands.append((SEED, seed_server(models_dir), "/predict"))
        commands.append((NOOP, noop_server, "/upload"))
        with contextlib.ExitStack() as running:
            servers = []
            for label, command, path in commands:
                print(f"starting {label} ...", flush=True)
                port = free_port()
                argv, environment, ready = command(port)
                base_url = f"http://127.0.0.1:{port}"
                try:
                    process = running.enter_context(
                        server(argv, environment, base_url + ready, log)
                    )
                except RuntimeError:
                    print(log.read_text()[-5000:], file=sys.stderr)
                    raise
                servers.append((label, base_url, path, process.pid))
            rows += measure_rounds(servers, workloads, args)
        rows += in_process(models_dir, workloads, args.seconds)
    labels["load_after"] = _load_average()
    rows.sort(key=lambda row: row.workload.name != CHIPS)
    report = format_report(args, rows, labels)
    print(report)
    if args.write_readme:
        write_section(
            SECTION,
            "facedemo, batching off, facedemo before a change, the seed-style peer, the no-op "
            "upload endpoint and the in-process ceiling, on the same images in one run "
            "(bench/peers.py; the load generator is bench/load.py).",
            report,
        )
    clean = all(
        row.result is None
        or (set(row.result.statuses) <= {200} and not row.result.transport_errors)
        for row in rows
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
