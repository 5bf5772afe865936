"""The app under uvicorn in a thread of the test process, on a free loopback port.

For tests that need a real HTTP server (a browser loading the pages) but not the `facedemo serve`
command line; that one runs in a subprocess, tests/served.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from facedemo.api import create_app
from facedemo.config import Settings


@contextmanager
def serving(settings: Settings, *, ready: bool = True) -> Iterator[str]:
    """A real uvicorn server for `settings` on a free local port; its base URL.

    With `ready`, once its models are loaded; else once it listens (the pages need no models).
    """
    import uvicorn

    app = create_app(settings)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.started and not ready:
                break
            if server.started:
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not become ready")
            time.sleep(0.1)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()
