"""`facedemo serve` in a subprocess on a free loopback port, for tests that need a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

# The API key of the session's `tiny_server` (conftest.py).
TINY_SERVER_KEY = "tiny-server-key-5d1e"


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and the file its stderr (the access log) goes to."""

    url: str
    log: Path

    def access_lines(self, route: str) -> int:
        """How many requests to `route` (e.g. "/predict") the access log has recorded so far."""
        return self.log.read_text().count(f'"route": "{route}"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def served(models_dir: Path, log: Path, **settings: str) -> Iterator[Served]:
    """`facedemo serve` over `models_dir` with FACEDEMO_<NAME> = value for each setting."""
    port = free_port()
    environment = {
        **os.environ,
        "FACEDEMO_MODELS_DIR": str(models_dir),
        "FACEDEMO_DEVICE": "cpu",
        "FACEDEMO_LOG_LEVEL": "info",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **{f"FACEDEMO_{name.upper()}": value for name, value in settings.items()},
    }
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "facedemo.cli", "serve", "--port", str(port)],
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, server, log)
        yield Served(url, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_until_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (up to 180 s) until `url` answers /readyz with 200; fail if the server exits first."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the server exited early:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server never became ready:\n{log.read_text()[-3000:]}")
