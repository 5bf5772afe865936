"""`facedemo predict PATH...`: folders, and bulk scoring through a served instance with --url."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.images import image_bytes
from tests.served import TINY_SERVER_KEY, Served

from facedemo import cli
from facedemo.cli.common import PROGRESS_BAR_WIDTH
from facedemo.cli.predict import CLIENT_API_KEY_VARIABLE
from facedemo.client.bulk import image_files
from facedemo.config import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(CLIENT_API_KEY_VARIABLE, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Nine images (two folders deep), one broken image, and files that are not images."""
    root = tmp_path / "photos"
    (root / "day2" / "later").mkdir(parents=True)
    (root / ".cache").mkdir()
    for index in range(4):
        (root / f"a{index}.png").write_bytes(image_bytes("PNG", 40, 30, seed=index))
    for index in range(3):
        (root / "day2" / f"b{index}.JPG").write_bytes(image_bytes("JPEG", 40, 30, seed=10 + index))
    for index in range(2):
        (root / "day2" / "later" / f"c{index}.webp").write_bytes(image_bytes("WEBP", 40, 30))
    (root / "day2" / "broken.jpg").write_bytes(b"not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(image_bytes("PNG"))
    (root / ".cache" / "thumb.png").write_bytes(image_bytes("PNG"))
    return root


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def bulk(
    server: Served, *paths: Path, output: Path | None, key: bool = True, more: tuple[str, ...] = ()
) -> int:
    argv = ["predict", "--url", server.url, *map(str, paths), "--detect", "skip", *more]
    if output is not None:
        argv += ["--output", str(output)]
    if key:
        argv += ["--api-key", TINY_SERVER_KEY]
    return cli.main(argv)


def test_folders_give_their_image_files_recursively(folder: Path) -> None:
    found = [
        path.relative_to(folder).as_posix() for path in image_files([folder, folder / "a0.png"])
    ]
    assert found == [
        "a0.png", "a1.png", "a2.png", "a3.png",
        "day2/b0.JPG", "day2/b1.JPG", "day2/b2.JPG", "day2/broken.jpg",
        "day2/later/c0.webp", "day2/later/c1.webp",
    ]  # fmt: skip


def test_bulk_writes_one_line_per_image(
    tiny_server: Served, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.jsonl"
    status = bulk(tiny_server, folder, output=output, more=("--concurrency", "3"))

    assert status == 1  # one image was refused
    lines = read_lines(output)
    expected = {str(path) for path in image_files([folder])}
    assert sorted(line["file"] for line in lines) == sorted(expected)
    refused = [line for line in lines if "error" in line]
    assert [line["file"] for line in refused] == [str(folder / "day2" / "broken.jpg")]
    assert refused[0]["error"]["code"] == "image_undecodable" and refused[0]["request_id"]
    for line in lines:
        if "error" not in line:
            assert line["faces"][0]["box"] == {"x": 0, "y": 0, "width": 30, "height": 40}
    assert len({line["request_id"] for line in lines}) == len(lines)
    err = capsys.readouterr().err
    assert "10/10 images: 9 predicted, 1 failed" in err and "images/s" in err


def test_a_rerun_after_an_interruption_does_only_the_rest(
    tiny_server: Served, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.jsonl"
    assert bulk(tiny_server, folder, output=output) == 1
    complete = output.read_text().splitlines(keepends=True)
    # As a run killed while writing its fifth line would leave the file:
    output.write_text("".join(complete[:4]) + complete[4][:25])
    before = tiny_server.access_lines("/predict")
    capsys.readouterr()

    assert bulk(tiny_server, folder, output=output) == 1

    lines = output.read_text().splitlines(keepends=True)
    assert lines[:4] == complete[:4]  # kept as they were, not redone
    files = [json.loads(line)["file"] for line in lines]
    assert len(files) == len(set(files)) == len(complete)
    assert sorted(files) == sorted(json.loads(line)["file"] for line in complete)
    assert tiny_server.access_lines("/predict") - before == len(complete) - 4
    assert "6/6 images" in capsys.readouterr().err

    assert bulk(tiny_server, folder, output=output) == 0  # nothing left to do
    assert output.read_text().splitlines(keepends=True) == lines


def test_without_the_key_the_run_stops_and_writes_nothing(
    tiny_server: Served, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "results.jsonl"
    assert bulk(tiny_server, folder, output=output, key=False) == 1
    assert output.read_text() == ""
    assert "stopped: 401 unauthorized" in capsys.readouterr().err


def test_the_key_can_come_from_the_environment(
    tiny_server: Served, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLIENT_API_KEY_VARIABLE, TINY_SERVER_KEY)
    output = tmp_path / "results.jsonl"
    assert bulk(tiny_server, folder / "a0.png", output=output, key=False) == 0
    assert [line["file"] for line in read_lines(output)] == [str(folder / "a0.png")]


def test_without_output_answers_print_as_in_process(
    tiny_server: Served, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = bulk(
        tiny_server,
        folder / "a1.png",
        folder / "day2" / "broken.jpg",
        output=None,
        more=("--json",),
    )
    captured = capsys.readouterr()
    assert status == 1
    [document] = [json.loads(line) for line in captured.out.splitlines()]
    assert document["file"] == str(folder / "a1.png") and len(document["faces"]) == 1
    assert "broken.jpg: the upload is not a readable" in captured.err


def test_a_progress_bar_is_drawn_on_a_terminal_only(
    tiny_server: Served, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert bulk(tiny_server, folder / "day2" / "later", output=tmp_path / "out.jsonl") == 0
    assert "\rpredicting [" + "#" * PROGRESS_BAR_WIDTH + "] 2/2 images" in terminal.getvalue()

    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    assert bulk(tiny_server, folder / "a2.png", output=tmp_path / "out2.jsonl") == 0
    assert "predicting [" not in piped.getvalue()


def test_remote_flags_need_url(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", str(folder), "--output", "x.jsonl", "--concurrency", "2"]) == 2
    assert "--concurrency, --output only work with --url" in capsys.readouterr().err


def test_in_process_predict_takes_a_folder(
    tiny_models_dir: Path,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FACEDEMO_MODELS_DIR", str(tiny_models_dir))
    shutil.rmtree(folder / "day2")
    assert cli.main(["predict", str(folder), "--json", "--detect", "skip"]) == 0
    files = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert files == [str(folder / f"a{index}.png") for index in range(4)]


def test_an_output_that_cannot_be_opened_is_a_usage_error(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "no-such-folder" / "results.jsonl"
    argv = ["predict", "--url", "http://127.0.0.1:9", str(folder), "--output", str(output)]
    assert cli.main(argv) == 2
    assert "No such file or directory" in capsys.readouterr().err
