"""Smoke test of the built images: both targets start and behave as they will when deployed.

    deploy/build-image.sh cpu && deploy/build-image.sh gpu
    .venv/bin/python deploy/image_check.py          # or: make image-check (builds, then this)

facedemo:cpu must start as the unprivileged user 10001, become ready, find every face of a group
photo on POST /predict with the answers this checkout gives in-process (`facedemo predict`; the
image runs tensorflow-cpu, the checkout the full tensorflow), refuse a bad upload with a
problem+json 4xx, and exit 0 on SIGTERM. facedemo:gpu, started without a GPU, must exit non-zero
within 30 s saying why; started with FACEDEMO_DEVICE=cpu, its `detect=auto` must run the face
detector it ships (RetinaFace in ONNX Runtime, which runs on the CPU beside GPU models) and give
the checkout's answers for the group photo. Prints both images' sizes, the time to ready and the
gpu image's detection time (median `timings_ms.detect` over repeated uploads).

The group photo is skimage's astronaut (Eileen Collins, public domain, shipped in scikit-image,
a test dependency) pasted at three sizes. The containers run with Docker when an engine answers,
otherwise with buildah in deploy/build-image.sh's storage; either way on this host's network, on
a free loopback port.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from skimage import data as skimage_data

ROOT = Path(__file__).resolve().parents[1]
CPU_IMAGE, GPU_IMAGE = "facedemo:cpu", "facedemo:gpu"
IMAGE_USER = "10001:10001"
READY_TIMEOUT_S = 180  # the Dockerfile's HEALTHCHECK start period
GPU_EXIT_TIMEOUT_S = 30
GPU_MESSAGE = "device 'gpu' was requested (FACEDEMO_DEVICE=gpu) but TensorFlow sees no GPU"
DETECTOR = "retinaface"  # the default FACEDEMO_DETECTOR, which the gpu image must run
TIMED_UPLOADS = 10  # of the group photo to the gpu image, for its detection time
# Pasted copies of the astronaut's head: (scale, left, top) on a grey 600x1000 canvas.
GROUP_LAYOUT = ((1.5, 40, 60), (1.0, 420, 200), (0.6, 760, 300))
# How far the image's answers may be from the checkout's (different TensorFlow builds).
AGE_TOLERANCE_YEARS = 0.11  # one step of the answer's rounding to a tenth of a year
PROBABILITY_TOLERANCE = 0.005
BOX_TOLERANCE_PX = 1


class Engine:
    """Runs images with Docker, or with buildah where there is no Docker engine."""

    def __init__(self) -> None:
        """Pick Docker if `docker info` succeeds (IMAGE_BUILDER=docker|buildah overrides)."""
        choice = os.environ.get("IMAGE_BUILDER", "auto")
        if choice == "auto":
            docker = shutil.which("docker") is not None and _succeeds(["docker", "info"])
            choice = "docker" if docker else "buildah"
        self.name = choice
        self.buildah = ["buildah"]
        if choice == "buildah":
            args = _output([str(ROOT / "deploy" / "build-image.sh"), "--buildah-args"])
            self.buildah += args.split()
        self._containers: list[str] = []

    def size(self, image: str) -> str:
        """The image's size as the engine reports it."""
        if self.name == "docker":
            size = int(_output(["docker", "image", "inspect", "--format", "{{.Size}}", image]))
            return f"{size / 1e9:.2f} GB"
        listed = json.loads(_output([*self.buildah, "images", "--json", image]))
        return str(listed[0]["size"])

    def configured_user(self, image: str) -> str:
        """The USER the image runs as."""
        if self.name == "docker":
            return _output(["docker", "image", "inspect", "--format", "{{.Config.User}}", image])
        return _output(
            [
                *self.buildah,
                "inspect",
                "--type",
                "image",
                "--format",
                "{{.OCIv1.Config.User}}",
                image,
            ]
        )

    def start(
        self, image: str, port: int, log: Path, environment: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the image's `facedemo serve` in the foreground, listening on 127.0.0.1:port,
        with `environment` added to the image's."""
        settings = [f"{key}={value}" for key, value in (environment or {}).items()]
        if self.name == "docker":
            name = f"facedemo-image-check-{os.getpid()}-{len(self._containers)}"
            self._containers.append(name)
            command = ["docker", "run", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8000"]
            command += [option for setting in settings for option in ("-e", setting)]
            command.append(image)
        else:
            container = _output([*self.buildah, "from", "--quiet", image])
            self._containers.append(container)
            # The host's network: bind loopback only, on a free port.
            command = [*self.buildah, "run", "--isolation", "chroot"]
            command += ["-e", "FACEDEMO_HOST=127.0.0.1", "-e", f"FACEDEMO_PORT={port}"]
            command += [option for setting in settings for option in ("-e", setting)]
            command += [container, "--", "facedemo", "serve"]
        with log.open("wb") as output:
            return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def server_pid(self, started: subprocess.Popen[bytes]) -> int:
        """The host PID of the container's `facedemo serve` process."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.name == "docker":
                inspected = subprocess.run(
                    ["docker", "inspect", "--format", "{{.State.Pid}}", self._containers[-1]],
                    capture_output=True,
                    text=True,
                    check=False,
                )  # fails until `docker run` has created the container
                if inspected.returncode == 0 and int(inspected.stdout) > 0:
                    return int(inspected.stdout)
            else:
                servers = [pid for pid in _descendants(started.pid) if _runs_serve(pid)]
                if servers:
                    return servers[0]
            time.sleep(0.2)
        raise CheckFailed("the container's facedemo serve process did not appear")

    def remove_containers(self) -> None:
        """Remove what `start` left behind (Docker's --rm already removed its containers)."""
        if self.name == "buildah":
            for container in self._containers:
                subprocess.run([*self.buildah, "rm", container], capture_output=True, check=False)
        self._containers.clear()


class CheckFailed(Exception):
    """A smoke check did not hold; the message says which and shows the container's log."""


def main() -> int:
    """Run every check; print the figures, or the first failure with the container's log."""
    engine = Engine()
    print(f"image-check: running the images with {engine.name}")
    with tempfile.TemporaryDirectory(prefix="facedemo-image-check-") as scratch:
        photo = Path(scratch) / "group.jpg"
        photo.write_bytes(group_photo_jpeg())
        try:
            expected = checkout_prediction(photo)
            check_cpu_image(engine, Path(scratch), photo, expected)
            check_gpu_image_without_gpu(engine, Path(scratch))
            check_gpu_image_on_cpu(engine, Path(scratch), photo, expected)
        except CheckFailed as failure:
            print(f"image-check: FAILED: {failure}", file=sys.stderr)
            return 1
        finally:
            engine.remove_containers()
    for image in (CPU_IMAGE, GPU_IMAGE):
        print(f"image-check: {image} is {engine.size(image)}")
    print("image-check: passed")
    return 0


def check_cpu_image(engine: Engine, scratch: Path, photo: Path, expected: dict[str, Any]) -> None:
    """Ready as user 10001; group photo, bad upload and SIGTERM as documented."""
    user = engine.configured_user(CPU_IMAGE)
    _expect(user == IMAGE_USER, f"{CPU_IMAGE} runs as {user!r}, not {IMAGE_USER}", None)
    port, log = free_port(), scratch / "cpu.log"
    base_url = f"http://127.0.0.1:{port}"
    started_at = time.monotonic()
    server = engine.start(CPU_IMAGE, port, log)
    try:
        pid = engine.server_pid(server)
        uid = _process_uid(pid)
        _expect(uid == 10001, f"facedemo serve runs as UID {uid}, not 10001", log)
        ready_after = wait_until_ready(base_url, server, log) - started_at
        print(f"image-check: {CPU_IMAGE} ready {ready_after:.1f} s after start, as UID {uid}")
        with httpx.Client(base_url=base_url, timeout=60) as client:
            answer = client.post("/predict", files={"file": ("group.jpg", photo.read_bytes())})
            refusal = client.post("/predict", files={"file": ("notes.jpg", b"not an image")})
        _expect(answer.status_code == 200, f"/predict answered {answer.status_code}", log)
        differences = compare_predictions(answer.json(), expected, log)
        print(
            f"image-check: /predict found the {len(expected['faces'])} faces; largest "
            f"differences from this checkout's own answers: {differences}"
        )
        check_problem(refusal, log)
        os.kill(pid, signal.SIGTERM)
        try:
            status = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"no exit within 60 s of SIGTERM\n{_tail(log)}") from None
        _expect(status == 0, f"exit status {status} after SIGTERM, not 0", log)
        print("image-check: SIGTERM: exited 0")
    finally:
        _stop(server)


def check_gpu_image_without_gpu(engine: Engine, scratch: Path) -> None:
    """Started where no GPU is visible, the gpu image exits non-zero within 30 s saying why."""
    log = scratch / "gpu.log"
    started_at = time.monotonic()
    server = engine.start(GPU_IMAGE, free_port(), log)
    try:
        status = server.wait(timeout=GPU_EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise CheckFailed(
            f"{GPU_IMAGE} without a GPU still runs after {GPU_EXIT_TIMEOUT_S} s\n{_tail(log)}"
        ) from None
    finally:
        _stop(server)
    elapsed = time.monotonic() - started_at
    _expect(status != 0, f"{GPU_IMAGE} without a GPU exited 0", log)
    _expect(GPU_MESSAGE in log.read_text(errors="replace"), "the reason is not in its log", log)
    print(f"image-check: {GPU_IMAGE} without a GPU exited {status} after {elapsed:.1f} s, saying:")
    print(f"image-check:   {GPU_MESSAGE} ...")


def check_gpu_image_on_cpu(
    engine: Engine, scratch: Path, photo: Path, expected: dict[str, Any]
) -> None:
    """With FACEDEMO_DEVICE=cpu the gpu image detects with its RetinaFace in ONNX Runtime and
    answers the group photo as the checkout does; prints its median detection time."""
    port, log = free_port(), scratch / "gpu-on-cpu.log"
    base_url = f"http://127.0.0.1:{port}"
    started_at = time.monotonic()
    server = engine.start(GPU_IMAGE, port, log, {"FACEDEMO_DEVICE": "cpu"})
    try:
        ready_after = wait_until_ready(base_url, server, log) - started_at
        print(
            f"image-check: {GPU_IMAGE} with FACEDEMO_DEVICE=cpu ready {ready_after:.1f} s "
            "after start"
        )
        upload = {"file": ("group.jpg", photo.read_bytes())}
        with httpx.Client(base_url=base_url, timeout=60) as client:
            detector = client.get("/models").json().get("detector") or {}
            answers = [client.post("/predict", files=upload) for _ in range(TIMED_UPLOADS)]
    finally:
        _stop(server)
    _expect(detector.get("name") == DETECTOR, f"/models names the detector {detector}", log)
    statuses = sorted({answer.status_code for answer in answers})
    _expect(statuses == [200], f"/predict answered {statuses}", log)
    differences = compare_predictions(answers[0].json(), expected, log)
    used = {model["name"] for model in answers[0].json()["models"]}
    _expect(DETECTOR in used, f"the answer's models are {sorted(used)}", log)
    detect_ms = statistics.median(answer.json()["timings_ms"]["detect"] for answer in answers)
    print(
        f"image-check: {GPU_IMAGE} detects with {detector['network']} on {detector['runtime']} "
        f"({detector['device']}): the {len(expected['faces'])} faces, differences {differences}; "
        f"detection {detect_ms:.1f} ms a photo (median of {TIMED_UPLOADS})"
    )


def group_photo_jpeg() -> bytes:
    """A grey canvas with the astronaut's head pasted at three sizes: three faces."""
    head = np.ascontiguousarray(skimage_data.astronaut()[20:230, 130:320])
    canvas = np.full((600, 1000, 3), 128, np.uint8)
    for scale, left, top in GROUP_LAYOUT:
        size = (round(head.shape[1] * scale), round(head.shape[0] * scale))
        pasted = np.asarray(Image.fromarray(head).resize(size, Image.Resampling.LANCZOS))
        canvas[top : top + pasted.shape[0], left : left + pasted.shape[1]] = pasted
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def checkout_prediction(photo: Path) -> dict[str, Any]:
    """What this checkout's own pipeline answers for the photo (`facedemo predict --json`)."""
    environment = {
        **os.environ,
        "FACEDEMO_DEVICE": "cpu",
        "FACEDEMO_MODELS_DIR": str(ROOT / "models"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "facedemo.cli", "predict", "--json", str(photo)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"facedemo predict failed in the checkout:\n{result.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if len(answer["faces"]) != len(GROUP_LAYOUT):
        raise CheckFailed(f"the checkout found {len(answer['faces'])} faces, not 3")
    return answer


def compare_predictions(actual: dict[str, Any], expected: dict[str, Any], log: Path) -> str:
    """Same faces, boxes within a pixel, ages and probabilities within the tolerances.

    Returns the largest differences found, to print.
    """
    faces, wanted = actual["faces"], expected["faces"]
    _expect(len(faces) == len(wanted), f"{len(faces)} faces, the checkout {len(wanted)}", log)
    box_offset, age_offset, female_offset = 0, 0.0, 0.0
    for face, reference in zip(faces, wanted, strict=True):
        box = [face["box"][key] for key in ("x", "y", "width", "height")]
        reference_box = [reference["box"][key] for key in ("x", "y", "width", "height")]
        box_offset = max(box_offset, *(abs(a - b) for a, b in zip(box, reference_box, strict=True)))
        age_offset = max(age_offset, abs(face["age"]["years"] - reference["age"]["years"]))
        female_offset = max(
            female_offset,
            abs(
                face["gender"]["probabilities"]["female"]
                - reference["gender"]["probabilities"]["female"]
            ),
        )
    differences = (
        f"boxes {box_offset} px, ages {age_offset:.3f} years, P(female) {female_offset:.4f}"
    )
    _expect(
        box_offset <= BOX_TOLERANCE_PX
        and age_offset <= AGE_TOLERANCE_YEARS
        and female_offset <= PROBABILITY_TOLERANCE,
        f"the image's answers differ from the checkout's by up to {differences}",
        log,
    )
    return differences


def check_problem(response: httpx.Response, log: Path) -> None:
    """A 4xx application/problem+json with a code."""
    kind = response.headers.get("content-type", "")
    _expect(
        400 <= response.status_code < 500 and kind == "application/problem+json",
        f"a bad upload got {response.status_code} {kind}",
        log,
    )
    body = response.json()
    _expect(body.get("status") == response.status_code and body.get("code"), f"{body}", log)
    print(f"image-check: a bad upload: {response.status_code} problem+json, code {body['code']}")


def wait_until_ready(base_url: str, server: subprocess.Popen[bytes], log: Path) -> float:
    """Poll /readyz until 200; the monotonic time it first answered 200."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CheckFailed(f"the server exited with {server.returncode}\n{_tail(log)}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise CheckFailed(f"not ready within {READY_TIMEOUT_S} s\n{_tail(log)}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _expect(condition: object, message: str, log: Path | None) -> None:
    if not condition:
        raise CheckFailed(message if log is None else f"{message}\n{_tail(log)}")


def _tail(log: Path) -> str:
    return "--- container log (end) ---\n" + log.read_text(errors="replace")[-3000:]


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.kill()
        server.wait()


def _process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise CheckFailed(f"no Uid line for process {pid}")


def _runs_serve(pid: int) -> bool:
    """Whether the process is the image's Python running `facedemo serve`.

    buildah's helper processes, which run as root, carry `facedemo serve` in their arguments too.
    """
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
    except OSError:  # gone meanwhile
        return False
    return (
        len(arguments) >= 3
        and Path(arguments[0].decode()).name.startswith("python")
        and arguments[1].endswith(b"/facedemo")
        and arguments[2] == b"serve"
    )


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc (children first)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _succeeds(command: Sequence[str]) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def _output(command: Sequence[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
