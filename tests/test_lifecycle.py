"""Lifecycle: a graceful stop on SIGTERM, and an exit when the models can never load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from tests.images import image_bytes
from tests.in_process import running, settled_readiness
from tests.problems import assert_problem
from tests.served import free_port, wait_until_ready

from facedemo import cli
from facedemo.api import create_app
from facedemo.cli.serve import EXIT_CANNOT_SERVE
from facedemo.config import Settings, get_settings
from facedemo.manifest import CLASSIFIER_NAME, MANIFEST_FILE, MODEL_FILE, REGRESSOR_NAME

IN_FLIGHT = 8
BOUNDARY = "facedemo-lifecycle"


def flip_one_bit(models_dir: Path) -> Settings:
    model_file = models_dir / REGRESSOR_NAME / "1.0.0" / MODEL_FILE
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, same size
    model_file.write_bytes(bytes(data))
    return Settings(models_dir=models_dir)


def drop_the_manifest(models_dir: Path) -> Settings:
    (models_dir / CLASSIFIER_NAME / "1.0.0" / MANIFEST_FILE).unlink()
    return Settings(models_dir=models_dir)


def empty_the_folder(models_dir: Path) -> Settings:
    shutil.rmtree(models_dir)
    models_dir.mkdir()
    return Settings(models_dir=models_dir)


def remove_the_folder(models_dir: Path) -> Settings:
    shutil.rmtree(models_dir)
    return Settings(models_dir=models_dir)


def pin_a_missing_version(models_dir: Path) -> Settings:
    return Settings(models_dir=models_dir, model_pins={REGRESSOR_NAME: "9.9.9"})


def demand_a_gpu(models_dir: Path) -> Settings:
    return Settings(models_dir=models_dir, device="gpu")


# How each configuration that can never load is made, and what the reason must say.
NEVER_LOADS: dict[str, tuple[Callable[[Path], Settings], str]] = {
    "a tampered model": (flip_one_bit, "checksum mismatch"),
    "an incomplete bundle": (drop_the_manifest, f"missing {MANIFEST_FILE}"),
    "an empty models folder": (empty_the_folder, "no bundle for model"),
    "a missing models folder": (remove_the_folder, "does not exist"),
    "a pin to a missing version": (pin_a_missing_version, "pinned to version '9.9.9'"),
    "a GPU demanded where there is none": (demand_a_gpu, "device 'gpu' was requested"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", NEVER_LOADS)
async def test_a_load_that_can_never_succeed_is_final_and_reported_with_the_reason(
    case: str, tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # no GPU
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models_dir)
    break_it, expected = NEVER_LOADS[case]
    failures: list[str] = []
    app = create_app(break_it(models_dir), on_load_failure=failures.append)

    async with running(app) as client:
        ready = await settled_readiness(client)
        predict = await client.post(
            "/predict",
            params={"detect": "skip"},
            files={"file": ("face.png", image_bytes("PNG"), "image/png")},
        )
        models = await client.get("/models")

    [reason] = failures
    assert expected in reason
    # Until the process ends (`facedemo serve` ends it at once), every route says why.
    assert assert_problem(ready, 503, "not_ready")["detail"] == f"models failed to load: {reason}"
    assert assert_problem(predict, 503, "not_ready")["detail"] == f"models failed to load: {reason}"
    assert_problem(models, 503, "not_ready")


@pytest.mark.anyio
async def test_a_load_that_succeeds_reports_no_failure(tiny_models_dir: Path) -> None:
    failures: list[str] = []
    app = create_app(Settings(models_dir=tiny_models_dir), on_load_failure=failures.append)

    async with running(app) as client:
        ready = await settled_readiness(client)

    assert ready.status_code == 200
    assert failures == []


def serve_command(port: int, workers: int = 1) -> list[str]:
    return [
        *(sys.executable, "-m", "facedemo.cli", "serve"),
        *("--port", str(port), "--workers", str(workers)),
    ]


def without_read_permission(models_dir: Path) -> list[str]:
    """A command prefix under which this process's user cannot read `models_dir`."""
    models_dir.chmod(0)
    if os.geteuid() != 0:
        return []
    # root reads anything through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; run without them.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux's setpriv to drop the read override")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize(
    ("case", "workers", "expected"),
    [
        ("gpu", 1, "device 'gpu' was requested (FACEDEMO_DEVICE=gpu) but TensorFlow sees no GPU"),
        ("unreadable", 1, "cannot read the model bundles in"),
        ("gpu", 2, "device 'gpu' was requested (FACEDEMO_DEVICE=gpu) but TensorFlow sees no GPU"),
    ],
)
def test_serve_exits_non_zero_within_30_s_when_the_models_can_never_load(
    case: str, workers: int, expected: str, tmp_path: Path, tiny_models_dir: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models_dir)
    environment = {
        **os.environ,
        "FACEDEMO_MODELS_DIR": str(models_dir),
        "FACEDEMO_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",  # no GPU, also on a machine that has one
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    prefix: list[str] = []
    if case == "gpu":
        environment["FACEDEMO_DEVICE"] = "gpu"
    else:
        prefix = without_read_permission(models_dir)
    try:
        # The old behaviour, alive and never ready, would run into the timeout.
        server = subprocess.run(
            [*prefix, *serve_command(free_port(), workers)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        models_dir.chmod(0o755)

    assert server.returncode == EXIT_CANNOT_SERVE, server.stderr[-3000:]
    assert f"models not loaded, the service cannot become ready: {expected}" in server.stderr
    assert "exiting with status 3" in server.stderr


def test_serve_configures_a_graceful_stop_and_json_access_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facedemo.cli import serve

    calls: list[Any] = []
    handlers_during_run: list[Any] = []

    def fake_run(config: Any) -> int:
        calls.append(config)
        handlers_during_run.append(signal.getsignal(signal.SIGTERM))
        return 0

    monkeypatch.setattr(serve, "_run_server", fake_run)
    monkeypatch.setenv("FACEDEMO_SHUTDOWN_TIMEOUT_SECONDS", "7")
    get_settings.cache_clear()
    handler_before = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["serve"]) == 0
    finally:
        get_settings.cache_clear()

    [config] = calls
    assert config.timeout_graceful_shutdown == 7
    assert config.access_log is False  # our JSON line replaces uvicorn's
    access = config.log_config["loggers"]["facedemo.access"]
    assert config.log_config["handlers"][access["handlers"][0]]["formatter"] == "json"
    assert handlers_during_run != [handler_before]
    assert signal.getsignal(signal.SIGTERM) == handler_before  # restored afterwards


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.anyio
async def test_sigterm_lets_in_flight_requests_finish_then_exits_0(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    environment = {
        **os.environ,
        "FACEDEMO_MODELS_DIR": str(tiny_models_dir),
        "FACEDEMO_DEVICE": "cpu",
        "FACEDEMO_SHUTDOWN_TIMEOUT_SECONDS": "60",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    with stdout.open("wb") as out, stderr.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)],
            env=environment,
            stdout=out,
            stderr=err,
        )
    try:
        wait_until_ready(base_url, server, stderr)
        image = image_bytes("JPEG", height=64, width=64)
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="face.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        halfway = anyio.Event()
        release = anyio.Event()
        started = 0

        async def paused_body() -> Any:
            # Half the upload, then a pause: the server has the request in hand, unfinished,
            # when SIGTERM arrives.
            nonlocal started
            yield head + image[: len(image) // 2]
            started += 1
            if started == IN_FLIGHT:
                halfway.set()
            await release.wait()
            yield image[len(image) // 2 :] + tail

        responses: list[httpx.Response] = []
        limits = httpx.Limits(max_connections=IN_FLIGHT)
        async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:

            async def post() -> None:
                responses.append(
                    await client.post(
                        "/predict",
                        params={"detect": "skip"},
                        content=paused_body(),
                        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
                    )
                )

            async with anyio.create_task_group() as tasks:
                for _ in range(IN_FLIGHT):
                    tasks.start_soon(post)
                with anyio.fail_after(60):
                    await halfway.wait()
                await anyio.sleep(1.0)  # the server reads the first halves
                server.send_signal(signal.SIGTERM)
                await anyio.sleep(1.5)
                stopped_accepting = refuses_connections(port)
                still_running = server.poll() is None
                release.set()

        exit_status = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    log = stderr.read_text()
    assert stopped_accepting, log[-3000:]
    assert still_running, log[-3000:]
    assert [response.status_code for response in responses] == [200] * IN_FLIGHT, log[-3000:]
    assert all(len(response.json()["faces"]) == 1 for response in responses)
    assert exit_status == 0, log[-3000:]
    assert "Waiting for connections to close" in log
    access = [json.loads(line) for line in stdout.read_text().splitlines() if line.startswith("{")]
    predictions = [line for line in access if line.get("route") == "/predict"]
    assert [line["status"] for line in predictions] == [200] * IN_FLIGHT
    assert {line["request_id"] for line in predictions} == {
        response.headers["x-request-id"] for response in responses
    }


# ------------------------------------------------------- configuration refused before starting


def quick_serve_environment(models_dir: Path, **settings: str) -> dict[str, str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("FACEDEMO_")
    }
    return {
        **environment,
        "FACEDEMO_MODELS_DIR": str(models_dir),
        "FACEDEMO_DEVICE": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **{f"FACEDEMO_{name}": value for name, value in settings.items()},
    }


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODEL_PINS", "{bad", "not JSON (Expecting property name enclosed in double quotes"),
        ("API_KEYS", " , ", "holds no key, only commas or blanks"),
    ],
)
def test_serve_refuses_an_invalid_setting_in_one_line_without_a_traceback(
    name: str, value: str, expected: str, tiny_models_dir: Path
) -> None:
    server = subprocess.run(
        serve_command(free_port()),
        env=quick_serve_environment(tiny_models_dir, **{name: value}),
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert server.returncode == 2, server.stderr[-3000:]
    [line] = server.stderr.splitlines()
    assert line.startswith(f"facedemo: invalid setting FACEDEMO_{name}: ")
    assert expected in line


def test_serve_on_a_port_in_use_exits_at_once_before_importing_tensorflow(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    # A tensorflow that cannot be imported: the command must have given up before it would.
    poisoned = tmp_path / "poisoned" / "tensorflow"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('tensorflow was imported')\n")
    environment = quick_serve_environment(tiny_models_dir)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(poisoned.parent), environment.get("PYTHONPATH")])
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        server = subprocess.run(
            serve_command(port), env=environment, capture_output=True, text=True, timeout=30
        )
        seconds = time.monotonic() - started

    assert server.returncode == EXIT_CANNOT_SERVE, server.stderr[-3000:]
    assert server.stderr == f"facedemo: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert seconds < 5, seconds  # about 0.4 s here; TensorFlow alone takes longer to import


# --------------------------------------------------------------------- a stop while loading


# `facedemo serve` whose model load has a step that takes a minute (as a TensorFlow call cannot
# be interrupted, neither can this sleep).
SERVE_WITH_A_SLOW_LOAD = """
import sys, time
from facedemo.mtcnn_detector import MtcnnDetector
MtcnnDetector.from_settings = classmethod(lambda cls, *args: time.sleep(60))
from facedemo.cli import main
sys.exit(main(["serve", "--port", sys.argv[1]]))
"""


def test_sigterm_while_the_models_load_exits_at_once_not_when_the_load_ends(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE_WITH_A_SLOW_LOAD, str(free_port())],
            env=quick_serve_environment(tiny_models_dir),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"models loaded and warmed up" not in log.read_bytes():  # now in the slow step
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        exit_status = server.wait(timeout=15)  # the old exit waited for the load: 60 s
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()

    assert exit_status == 0, log.read_text()[-3000:]
    assert "Finished server process" in log.read_text()


@pytest.mark.anyio
async def test_a_stop_while_the_models_load_ends_the_load_at_its_next_step(
    tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python waits for every thread before a process ends: a load left to run to its end held
    a stopped `facedemo serve` for seconds (the models' remaining load and warm-up)."""
    import threading

    from facedemo import registry
    from facedemo.errors import NotReadyError
    from facedemo.mtcnn_detector import MtcnnDetector

    in_first_step, release = threading.Event(), threading.Event()
    steps: list[str] = []
    outcome: list[BaseException | None] = []
    load_model = registry._load_model
    from_settings = registry.Registry.from_settings.__func__  # type: ignore[attr-defined]

    def slow_load_model(bundle: Path, manifest: Any, device: str) -> Any:
        steps.append(manifest.name)
        in_first_step.set()
        release.wait(30)  # a step under way when the service stops
        return load_model(bundle, manifest, device)

    def observed_load(cls: type[registry.Registry], *args: Any) -> registry.Registry:
        try:
            loaded = from_settings(cls, *args)
        except BaseException as error:
            outcome.append(error)
            raise
        outcome.append(None)
        return loaded  # type: ignore[no-any-return]

    def no_detector(*args: Any) -> None:
        steps.append("detector")

    monkeypatch.setattr(registry, "_load_model", slow_load_model)
    monkeypatch.setattr(registry.Registry, "from_settings", classmethod(observed_load))
    monkeypatch.setattr(MtcnnDetector, "from_settings", no_detector)
    failures: list[str] = []
    app = create_app(Settings(models_dir=tiny_models_dir), on_load_failure=failures.append)

    async with running(app):
        await anyio.to_thread.run_sync(in_first_step.wait, 30)
    release.set()  # the service has stopped; the step under way finishes
    with anyio.fail_after(30):
        while not outcome:
            await anyio.sleep(0.01)

    [error] = outcome
    assert isinstance(error, NotReadyError), error
    assert steps == [CLASSIFIER_NAME]  # no second model, no detector
    assert failures == []  # a stop is not a failure to load
