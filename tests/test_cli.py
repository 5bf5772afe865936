"""The `facedemo` command: predict, models and serve, driven through `main(argv)`."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image
from tests.served import free_port

from facedemo import cli
from facedemo.config import get_settings
from facedemo.manifest import CLASSIFIER_NAME, MANIFEST_FILE, MODEL_FILE, REGRESSOR_NAME

if TYPE_CHECKING:
    import uvicorn


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Environment variables for the CLI's settings, read afresh by each `main` call."""
    for name in ("HOST", "PORT", "MODELS_DIR", "MODEL_PINS", "DEVICE", "LOG_LEVEL", "API_KEYS"):
        monkeypatch.delenv(f"FACEDEMO_{name}", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def models_env(settings_env: pytest.MonkeyPatch, tiny_models_dir: Path) -> Path:
    settings_env.setenv("FACEDEMO_MODELS_DIR", str(tiny_models_dir))
    return tiny_models_dir


def write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


# ----------------------------------------------------------------------------- predict


def test_predict_json_prints_one_object_per_image_and_survives_bad_ones(
    models_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_png(tmp_path / "good.png", 30, 20)
    other = write_png(tmp_path / "other.png", 16, 16, seed=1)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("just text")
    missing = tmp_path / "missing.png"

    images = [str(good), str(missing), str(not_an_image), str(other)]
    status = cli.main(["predict", *images, "--json", "--detect", "skip"])

    captured = capsys.readouterr()
    assert status == 1
    documents = [json.loads(line) for line in captured.out.splitlines()]
    assert [document["file"] for document in documents] == [str(good), str(other)]
    first = documents[0]
    assert first["image"] == {"width": 20, "height": 30}
    assert first["faces"][0]["box"] == {"x": 0, "y": 0, "width": 20, "height": 30}
    assert first["faces"][0]["gender"]["label"] in ("male", "female")
    assert {model["name"] for model in first["models"]} == {CLASSIFIER_NAME, REGRESSOR_NAME}
    assert "missing.png" in captured.err and "notes.jpg" in captured.err
    assert "good.png" not in captured.err


def test_predict_prints_a_table_by_default(
    models_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_png(tmp_path / "face.png", 24, 24)

    status = cli.main(["predict", str(image), "--detect", "skip"])

    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{image}: 24x24, 1 face, ")
    assert "80% interval" in lines[1]
    row = lines[2].split()
    assert row[:2] == ["1", "0,0,24,24"]
    assert row[5] in ("male", "female")
    assert not out.lstrip().startswith("{")


def test_predict_without_models_fails_with_the_reason(
    settings_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_env.setenv("FACEDEMO_MODELS_DIR", str(tmp_path / "nowhere"))
    image = write_png(tmp_path / "face.png", 8, 8)

    status = cli.main(["predict", str(image)])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert "models not loaded" in captured.err and "nowhere" in captured.err


def test_predict_refuses_an_unknown_detect_mode(
    models_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "face.png", "--detect", "banana"])

    assert exit_info.value.code == 2
    assert "invalid choice: 'banana'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- models


def test_models_lists_and_checks_each_bundle(
    models_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["models"])

    out = capsys.readouterr().out
    assert status == 0
    rows = [line for line in out.splitlines() if line.startswith("*")]
    assert [row.split()[1:3] for row in rows[:2]] == [
        [CLASSIFIER_NAME, "1.0.0"],
        [REGRESSOR_NAME, "1.0.0"],
    ]
    assert all(row.split()[-1] == "ok" for row in rows[:2])
    assert "age-gender-classification" in out and "age-regression" in out


def test_models_json_reports_a_tampered_bundle_and_fails(
    settings_env: pytest.MonkeyPatch,
    tiny_models_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models_dir)
    newer = models_dir / CLASSIFIER_NAME / "1.1.0"
    shutil.copytree(models_dir / CLASSIFIER_NAME / "1.0.0", newer)
    manifest = json.loads((newer / MANIFEST_FILE).read_text())
    (newer / MANIFEST_FILE).write_text(json.dumps({**manifest, "version": "1.1.0"}))
    with (newer / MODEL_FILE).open("ab") as model_file:
        model_file.write(b"tampered")
    settings_env.setenv("FACEDEMO_MODELS_DIR", str(models_dir))

    status = cli.main(["models", "--json"])

    captured = capsys.readouterr()
    rows: list[dict[str, Any]] = json.loads(captured.out)
    assert status == 1
    by_version = {(row["name"], row["version"]): row for row in rows}
    assert set(by_version) == {
        (CLASSIFIER_NAME, "1.0.0"),
        (CLASSIFIER_NAME, "1.1.0"),
        (REGRESSOR_NAME, "1.0.0"),
    }
    broken = by_version[(CLASSIFIER_NAME, "1.1.0")]
    assert broken["selected"] is True and broken["ok"] is False
    assert "checksum mismatch" in broken["problem"]
    older = by_version[(CLASSIFIER_NAME, "1.0.0")]
    assert older["selected"] is False and older["ok"] is True
    assert older["task"] == "age-gender-classification" and len(older["model_sha256"]) == 64
    assert "checksum mismatch" in captured.err


def test_models_with_a_missing_folder_fails(
    settings_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_env.setenv("FACEDEMO_MODELS_DIR", str(tmp_path / "absent"))

    status = cli.main(["models"])

    assert status == 1
    assert "does not exist" in capsys.readouterr().err


def test_models_with_an_unreadable_folder_fails_with_the_reason(
    settings_env: pytest.MonkeyPatch,
    tiny_models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings_env.setenv("FACEDEMO_MODELS_DIR", str(tiny_models_dir))
    listing = Path.iterdir

    def refused(path: Path) -> Iterator[Path]:
        # As os.listdir answers a user without read permission (root reads anything, so the
        # refusal is simulated here; tests/test_lifecycle.py runs `serve` under real permissions).
        if path == tiny_models_dir:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(Path, "iterdir", refused)

    status = cli.main(["models"])

    assert status == 1
    assert f"cannot read the model bundles in {tiny_models_dir}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- serve


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[uvicorn.Config]:
    """The configs `facedemo serve` would run one server process with (it binds nothing)."""
    from facedemo.cli import serve

    calls: list[uvicorn.Config] = []
    monkeypatch.setattr(serve, "_run_server", lambda config: calls.append(config) or 0)
    return calls


def test_serve_runs_the_app_factory_with_settings_from_the_environment(
    settings_env: pytest.MonkeyPatch, uvicorn_calls: list[uvicorn.Config]
) -> None:
    settings_env.setenv("FACEDEMO_HOST", "0.0.0.0")
    settings_env.setenv("FACEDEMO_PORT", "9001")
    settings_env.setenv("FACEDEMO_LOG_LEVEL", "warning")

    assert cli.main(["serve"]) == 0

    [config] = uvicorn_calls
    assert config.app == "facedemo.cli.serve:create_served_app"
    assert config.factory is True
    assert (config.host, config.port, config.workers) == ("0.0.0.0", 9001, 1)
    assert config.log_level == "warning"
    assert isinstance(config.log_config, dict)
    assert config.log_config["loggers"]["facedemo"]["level"] == "WARNING"


def test_serve_flags_override_the_environment(
    settings_env: pytest.MonkeyPatch, uvicorn_calls: list[uvicorn.Config]
) -> None:
    settings_env.setenv("FACEDEMO_PORT", "9001")

    assert cli.main(["serve", "--host", "::1", "--port", "8123"]) == 0

    [config] = uvicorn_calls
    assert (config.host, config.port, config.workers) == ("::1", 8123, 1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_at_once_naming_the_address(
    settings_env: pytest.MonkeyPatch,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    workers: str,
) -> None:
    import uvicorn
    import uvicorn.supervisors

    from facedemo.cli import serve

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a server or supervisor was started on an address in use")

    # uvicorn.main's too: `uvicorn.run`, which binds only after importing the app, fails here.
    for module in (uvicorn, importlib.import_module("uvicorn.main")):
        monkeypatch.setattr(module, "Server", never)
    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", never)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        status = cli.main(["serve", "--port", str(port), "--workers", workers])

    assert status == serve.EXIT_CANNOT_SERVE
    assert capsys.readouterr().err == (
        f"facedemo: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_serve_hands_uvicorn_the_socket_it_bound(
    settings_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from facedemo.cli import serve

    handed: list[list[socket.socket]] = []

    class Server:
        started = True

        def __init__(self, config: uvicorn.Config) -> None:
            self.config = config

        def run(self, sockets: list[socket.socket]) -> None:
            # Bound to the address asked for, and held: nobody else can take the port now.
            assert [listener.getsockname() for listener in sockets] == [
                ("127.0.0.1", self.config.port)
            ]
            with socket.socket() as rival, pytest.raises(OSError):
                rival.bind(("127.0.0.1", self.config.port))
            handed.append(sockets)

    # As above: no real server, whichever way it would be run.
    for module in (uvicorn, importlib.import_module("uvicorn.main")):
        monkeypatch.setattr(module, "Server", Server)
    port = free_port()

    assert cli.main(["serve", "--port", str(port)]) == serve.EXIT_OK
    assert len(handed) == 1


def test_several_workers_run_under_a_supervisor_whose_status_is_the_command_s(
    settings_env: pytest.MonkeyPatch,
    uvicorn_calls: list[uvicorn.Config],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facedemo.cli import serve

    configs: list[Any] = []

    def supervise(config: Any) -> int:
        configs.append(config)
        return serve.EXIT_CANNOT_SERVE

    monkeypatch.setattr(serve, "_run_workers", supervise)

    assert cli.main(["serve", "--port", "8123", "--workers", "3"]) == serve.EXIT_CANNOT_SERVE

    assert uvicorn_calls == []
    [config] = configs
    assert (config.app, config.factory, config.port, config.workers) == (
        serve.APP_FACTORY,
        True,
        8123,
        3,
    )


@pytest.mark.parametrize("flags", [["--port", "0"], ["--port", "70000"], ["--workers", "zero"]])
def test_serve_rejects_bad_flags(
    settings_env: pytest.MonkeyPatch,
    uvicorn_calls: list[uvicorn.Config],
    flags: list[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", *flags])

    assert exit_info.value.code == 2
    assert uvicorn_calls == []


# Settings that fail validation, and what the one line about each must say after the variable.
INVALID_SETTINGS = {
    "pins that are not JSON": ("MODEL_PINS", "{bad", "not JSON (Expecting property name"),
    "pins that are not a map": ("MODEL_PINS", '["1.0.0"]', "Input should be a valid dictionary"),
    "a pin that is not a string": ("MODEL_PINS", '{"age-regressor": 1}', "(at age-regressor)"),
    "a key list without a key": ("API_KEYS", " , ", "holds no key, only commas or blanks"),
    "a port that is not a number": ("PORT", "not-a-port", "Input should be a valid integer"),
    "an unknown device": ("DEVICE", "tpu", "Input should be 'auto', 'cpu' or 'gpu'"),
}


@pytest.mark.parametrize("case", INVALID_SETTINGS)
@pytest.mark.parametrize(
    "argv", [["serve"], ["models"], ["predict", "x.jpg"], ["evaluate", "folder"]], ids=str
)
def test_an_invalid_setting_is_one_line_naming_the_variable_for_every_command(
    settings_env: pytest.MonkeyPatch,
    uvicorn_calls: list[uvicorn.Config],
    capsys: pytest.CaptureFixture[str],
    case: str,
    argv: list[str],
) -> None:
    name, value, expected = INVALID_SETTINGS[case]
    settings_env.setenv(f"FACEDEMO_{name}", value)

    assert cli.main(argv) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"facedemo: invalid setting FACEDEMO_{name}")
    assert expected in line
    assert uvicorn_calls == []


def test_every_invalid_setting_gets_its_line_and_no_value_is_echoed(
    settings_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_env.setenv("FACEDEMO_PORT", "secret-looking-value")
    settings_env.setenv("FACEDEMO_LOG_LEVEL", "loud")

    assert cli.main(["models"]) == 2

    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1] for line in lines] == [
        " invalid setting FACEDEMO_PORT",
        " invalid setting FACEDEMO_LOG_LEVEL",
    ]
    assert not any("secret-looking-value" in line or "loud" in line for line in lines)


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])

    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.SUBCOMMANDS)
