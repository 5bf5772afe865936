"""The connection guard (api/connections.py) on a real uvicorn server, driven by raw sockets.

Each test runs uvicorn in a thread on a loopback port, over a tiny ASGI app, with the guard's
limits shrunk (header and body deadlines of 0.5 s, a few connections).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from facedemo.api import connections
from facedemo.api.connections import ConnectionLimits, GuardedHttpToolsProtocol
from facedemo.config import Settings, get_settings

DEADLINE = 0.5
LIMITS = ConnectionLimits(
    max_connections=100,
    header_timeout_seconds=DEADLINE,
    body_timeout_seconds=DEADLINE,
    max_header_bytes=2048,
)


@dataclass
class TinyApp:
    """GET /: "ok"; GET /slow?SECONDS: "ok" after a sleep; POST /echo: the body's length.

    `events` records what POST /echo received last: "body" or "disconnect".
    """

    events: list[str] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/slow":
            await asyncio.sleep(float(scope["query_string"] or 1))
        size = 0
        if scope["method"] == "POST":
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.events.append("disconnect")
                    break
                size += len(message["body"])
                if not message["more_body"]:
                    self.events.append("body")
                    break
        body = str(size).encode() if scope["method"] == "POST" else b"ok"
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Running:
    server: uvicorn.Server
    port: int
    app: TinyApp

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def open_connections(self) -> int:
        """Connections the server holds that it has not closed (read from the test's thread)."""
        return sum(
            1
            for connection in list(self.server.server_state.connections)
            if not getattr(connection, "transport", None) or not connection.transport.is_closing()
        )


@contextmanager
def running(
    monkeypatch: pytest.MonkeyPatch, limits: ConnectionLimits = LIMITS
) -> Iterator[Running]:
    monkeypatch.setattr(connections, "connection_limits", lambda: limits)
    app = TinyApp()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=GuardedHttpToolsProtocol,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=5,  # longer than the deadlines: a close within 1 s is not uvicorn's
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - started < 5, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Running(server, port, app)
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def read_until_closed(sock: socket.socket, within: float = 3.0) -> tuple[bytes, float | None]:
    """Everything the server sends until it closes, and when it closed (None: still open)."""
    received = b""
    end = time.monotonic() + within
    while (left := end - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic()
        received += chunk
    return received, None


def read_response(sock: socket.socket) -> bytes:
    """One response of the tiny app (it always sends a Content-Length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return received


def is_closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def problem(response: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


# ----------------------------------------------------------------------------- header deadline


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running(monkeypatch) as served, served.connect() as sock:
        opened = time.monotonic()
        received, closed_at = read_until_closed(sock)

    assert closed_at is not None, "the server kept a silent connection open"
    assert DEADLINE - 0.1 <= closed_at - opened <= DEADLINE + 0.5
    assert received == b""  # nothing was asked, so nothing is answered


def test_trickling_a_request_line_does_not_extend_the_header_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trickle = b"GET / HTTP/1.1\r\nX-Padding: " + b"a" * 100
    with running(monkeypatch) as served, served.connect() as sock:
        opened = time.monotonic()
        received, closed_at = b"", None
        for byte in trickle:  # a byte every 0.1 s, for up to 11 s
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed_at = time.monotonic()
                break
            received, closed_at = read_until_closed(sock, within=0.1)
            if closed_at is not None or received:
                received += read_until_closed(sock)[0]
                closed_at = closed_at or time.monotonic()
                break

    assert closed_at is not None, "the server waited for the trickled headers"
    assert closed_at - opened <= DEADLINE + 0.5
    status, headers, body = problem(received)
    assert (status, headers["content-type"], headers["connection"]) == (
        408,
        "application/problem+json",
        "close",
    )
    assert body["code"] == "request_timeout"


# ----------------------------------------------------------------------------- body deadline


def test_a_body_shorter_than_its_content_length_gets_408_and_a_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running(monkeypatch) as served, served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        sent = time.monotonic()
        received, closed_at = read_until_closed(sock)
        time.sleep(0.1)  # the app's task ends after the close
        events = served.app.events

    assert closed_at is not None
    assert DEADLINE - 0.1 <= closed_at - sent <= DEADLINE + 0.5
    status, headers, body = problem(received)
    assert (status, headers["content-type"], headers["connection"]) == (
        408,
        "application/problem+json",
        "close",
    )
    assert body == {
        "type": "about:blank",
        "title": "Request Timeout",
        "status": 408,
        "detail": f"the request body did not arrive within {DEADLINE:g} s",
        "instance": "/echo",
        "code": "request_timeout",
    }
    assert received.count(b"HTTP/1.1") == 1  # the app's own 200 afterwards went nowhere
    assert events == ["disconnect"]  # its pending receive() saw the client gone


def test_a_slow_body_that_arrives_in_time_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    with running(monkeypatch) as served, served.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + b"x" * 10)
        time.sleep(DEADLINE / 2)
        sock.sendall(b"y" * 10)
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n20")


# ----------------------------------------------------------------------------- header size


@pytest.mark.parametrize("pieces", [1, 8], ids=["in-one-send", "in-several-sends"])
def test_headers_over_max_header_bytes_get_431(
    monkeypatch: pytest.MonkeyPatch, pieces: int
) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    with running(monkeypatch) as served, served.connect() as sock:
        step = len(request) // pieces + 1
        for start in range(0, len(request), step):
            sock.sendall(request[start : start + step])
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered: more bytes would meet a closed socket, and reset the answer
        received, closed_at = read_until_closed(sock)

    assert closed_at is not None
    status, headers, body = problem(received)
    assert (status, headers["content-type"], headers["connection"]) == (
        431,
        "application/problem+json",
        "close",
    )
    assert body["code"] == "request_header_fields_too_large"


def test_a_megabyte_of_headers_gets_431_at_the_default_limit_without_being_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = ConnectionLimits(100, 30.0, 30.0, Settings().max_header_bytes)
    megabyte = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    with running(monkeypatch, limits) as served, served.connect() as sock:
        sent = 0
        while sent < len(megabyte) and not select.select([sock], [], [], 0)[0]:
            try:
                sent += sock.send(megabyte[sent : sent + 65536])
            except OSError:  # closed after its answer: the rest is not read
                break
        received, closed_at = read_until_closed(sock)

    assert closed_at is not None
    status, _, body = problem(received)
    assert (status, body["code"]) == (431, "request_header_fields_too_large")
    assert "65536 bytes" in body["detail"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["request-line", "header-name", "chunk-size"],
)
def test_what_cannot_be_parsed_gets_a_400_problem_with_the_security_headers(
    monkeypatch: pytest.MonkeyPatch, request_bytes: bytes
) -> None:
    with running(monkeypatch) as served, served.connect() as sock:
        sock.sendall(request_bytes)
        received, closed_at = read_until_closed(sock)

    assert closed_at is not None
    status, headers, body = problem(received)
    assert (status, headers["content-type"], body["code"]) == (
        400,
        "application/problem+json",
        "bad_request",
    )
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["cache-control"] == "no-store"


def test_a_body_in_the_same_send_as_small_headers_is_not_counted_as_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = b"x" * 5000
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    with running(monkeypatch) as served, served.connect() as sock:
        sock.sendall(head + body)
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n5000")


# ----------------------------------------------------------------------------- keep-alive


def test_a_kept_alive_connection_serves_requests_and_the_header_deadline_restarts_after_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running(monkeypatch) as served, served.connect() as sock:
        # Longer than the header deadline: it must not cut a request whose headers are in.
        sock.sendall(b"GET /slow?%g HTTP/1.1\r\nHost: x\r\n\r\n" % (DEADLINE * 1.6))
        first = read_response(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        second = read_response(sock)
        answered = time.monotonic()
        _, closed_at = read_until_closed(sock)

    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 ")
    assert closed_at is not None, "the idle kept-alive connection stayed open"
    # From the last answer (uvicorn's own keep-alive timeout here is 5 s).
    assert DEADLINE - 0.1 <= closed_at - answered <= DEADLINE + 0.5


# ----------------------------------------------------------------------------- connection cap


def test_at_the_cap_a_new_connection_evicts_the_one_idle_longest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = 5
    limits = ConnectionLimits(cap, 30.0, 30.0, 65536)  # deadlines out of the way
    with running(monkeypatch, limits) as served, ExitStack() as stack:
        idle = []
        for _ in range(cap):
            idle.append(stack.enter_context(served.connect()))
            time.sleep(0.05)  # one after the other: the first is the one idle longest
        time.sleep(0.1)
        assert served.open_connections() == cap

        with served.connect() as fresh:
            fresh.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(fresh).startswith(b"HTTP/1.1 200 ")
            assert [is_closed(sock) for sock in idle] == [True] + [False] * (cap - 1)
            assert served.open_connections() <= cap

            # A flood of newcomers: every one gets in by evicting the oldest idle one.
            flood = [stack.enter_context(served.connect()) for _ in range(3 * cap)]
            time.sleep(0.2)
            assert served.open_connections() <= cap
            survivors = [sock for sock in [*idle, fresh, *flood] if not is_closed(sock)]
            assert len(survivors) == cap
            assert survivors == flood[-cap:]


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cap = 3
    limits = ConnectionLimits(cap, 30.0, 30.0, 65536)
    with running(monkeypatch, limits) as served, ExitStack() as stack:
        busy = [stack.enter_context(served.connect()) for _ in range(cap)]
        for sock in busy:
            sock.sendall(b"GET /slow?1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)

        with served.connect() as refused:
            received, closed_at = read_until_closed(refused, within=0.5)

        assert all(read_response(sock).startswith(b"HTTP/1.1 200 ") for sock in busy)

    assert closed_at is not None
    status, headers, body = problem(received)
    assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
    assert (body["code"], body["type"]) == (
        "overloaded",
        "https://facedemo.dev/problems/overloaded",
    )


def test_closes_are_logged_without_request_contents(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="facedemo.api.connections")
    with running(monkeypatch) as served, served.connect() as sock:
        sock.sendall(b"GET /secret-path HTTP/1.1\r\nX-Token: hunter2\r\n")
        read_until_closed(sock)

    lines = [
        record.getMessage() for record in caplog.records if record.name == connections.__name__
    ]
    assert lines == ["closed a connection: header deadline"]


# ----------------------------------------------------------------------------- settings, CLI


def test_the_limits_come_from_the_settings_within_the_descriptor_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connections.resource, "getrlimit", lambda which: (1000, 4096))
    limits = ConnectionLimits.from_settings(
        Settings(max_connections=5000, header_timeout_seconds=7, max_header_bytes=4096)
    )

    assert limits == ConnectionLimits(1000 - connections.DESCRIPTOR_RESERVE, 7.0, 30.0, 4096)
    assert ConnectionLimits.from_settings(Settings(max_connections=10)).max_connections == 10


@pytest.fixture
def uvicorn_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    for name in ("HOST", "PORT", "LOG_LEVEL", "KEEPALIVE_TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"FACEDEMO_{name}", raising=False)
    monkeypatch.setenv("FACEDEMO_KEEPALIVE_TIMEOUT_SECONDS", "7.5")
    get_settings.cache_clear()
    calls: list[dict[str, Any]] = []
    from facedemo.cli import serve

    # `facedemo serve`'s one server process, not started: the options of its uvicorn config.
    monkeypatch.setattr(serve, "_run_server", lambda config: calls.append(vars(config)) or 0)
    yield calls
    get_settings.cache_clear()


def test_serve_runs_the_guarded_protocol_with_the_keepalive_setting(
    uvicorn_runs: list[dict[str, Any]],
) -> None:
    from facedemo import cli

    assert cli.main(["serve"]) == 0

    [options] = uvicorn_runs
    assert options["http"] is GuardedHttpToolsProtocol
    assert options["timeout_keep_alive"] == 7.5


def test_several_workers_get_the_guarded_protocol_through_a_pickled_config(
    uvicorn_runs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from facedemo import cli
    from facedemo.cli import serve

    configs: list[uvicorn.Config] = []
    monkeypatch.setattr(serve, "_run_workers", lambda config: configs.append(config) or 0)

    assert cli.main(["serve", "--workers", "2"]) == 0

    [config] = configs
    # uvicorn's supervisor starts workers with multiprocessing's spawn, which pickles the config.
    copy = pickle.loads(pickle.dumps(config))
    assert copy.http is GuardedHttpToolsProtocol
    assert copy.timeout_keep_alive == 7.5
