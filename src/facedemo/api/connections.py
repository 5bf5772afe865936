"""`GuardedHttpToolsProtocol`: uvicorn's httptools protocol with deadlines and a connection cap.

uvicorn (0.55) bounds none of what a client sends before the application answers: it waits
forever for a request's headers and body, lets headers grow without limit, and accepts every
connection it is offered (`limit_concurrency` answers *requests* with 503, and never closes an
idle connection). It is a long-standing gap in its tracker. One client opening thousands of
silent sockets, or trickling a byte every few seconds, would hold the process's descriptors and
shut everyone else out. This subclass, passed as `uvicorn.run(..., http=GuardedHttpToolsProtocol)`
(`facedemo serve` does), adds the bounds, each from `Settings` (FACEDEMO_*):

- header deadline (`header_timeout_seconds`): a request's line and headers must have arrived this
  long after the connection opened, or after the previous response on a kept-alive one. Bytes
  arriving do not extend it, so trickling does not help. On expiry a partial request gets 408 and
  the connection is closed; one that sent nothing is just closed. (uvicorn's own keep-alive timer,
  `keepalive_timeout_seconds`, still closes a kept-alive connection idle between requests sooner.)
- body deadline (`body_timeout_seconds`): from the headers to the body's last byte. On expiry, if
  the application has not started an answer, 408 problem+json with `Connection: close`; either way
  the application's pending `receive()` sees `http.disconnect`, its later sends are dropped, and
  the connection is closed. Time when the server itself stopped reading (the application has not
  taken the body yet) does not count against the client.
- header size (`max_header_bytes`): more bytes before the headers' end get 431 and a close.
- protocol errors: what httptools cannot parse gets 400 problem+json (uvicorn answers
  text/plain) and a close. Every answer written here carries the security headers of
  api/headers.py, since none passes through the application.
- connection cap (`max_connections`, lowered to the process's descriptor limit less
  `DESCRIPTOR_RESERVE`): a connection arriving at the cap closes the one idle longest (no request
  being answered on it: silent, kept alive between requests, or still sending its headers); when
  every one is busy with a request, the newcomer gets 503 `overloaded` and is closed instead.

Closes are logged at info on the `facedemo.api.connections` logger, summed to at most one line a
second so that a flood cannot flood the log; nothing of a request is logged.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import resource
import sys
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from facedemo.api.headers import API_CACHE_CONTROL, API_POLICY, BASELINE_HEADERS
from facedemo.config import Settings, get_settings
from facedemo.errors import OverloadedError
from facedemo.schemas import PROBLEM_TYPE_BASE, Problem

logger = logging.getLogger(__name__)

# Descriptors kept free of client connections under the RLIMIT_NOFILE soft limit: the listening
# socket, model files, logs, threads' pipes, and connections accepted in one burst before the
# protocol can close them.
DESCRIPTOR_RESERVE = 64
REPORT_INTERVAL_SECONDS = 1.0

Phase = Literal["headers", "body"]

# The answers written here never pass through the application's middleware: the same headers.
_SECURITY_HEADERS = tuple(
    (name.lower().encode(), value.encode())
    for name, value in {
        **BASELINE_HEADERS,
        "Content-Security-Policy": API_POLICY,
        "Cache-Control": API_CACHE_CONTROL,
    }.items()
)


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds one server process applies to its connections (see the module docstring)."""

    max_connections: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_header_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_connections=min(settings.max_connections, descriptor_cap()),
            header_timeout_seconds=settings.header_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
        )


def descriptor_cap() -> int:
    """Most client connections the process's descriptor limit leaves room for."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return max(1, soft - DESCRIPTOR_RESERVE)


@cache
def connection_limits() -> ConnectionLimits:
    """The limits of this process, read once from `get_settings()` (tests replace this function)."""
    return ConnectionLimits.from_settings(get_settings())


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus header and body deadlines, a header cap and eviction.

    Importable by path and stateless at class level, so uvicorn can pickle it into `--workers`.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = connection_limits()
        self.idle_since = time.monotonic()  # since its start, or its last response's end
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Phase | None = None
        self._header_room: int | None = self.limits.max_header_bytes  # None: headers are in
        self._request_begun = False  # a request's first bytes came, not all its headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = time.monotonic()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._close(
                "refused at the connection cap, all busy",
                503,
                "overloaded",
                "too many open connections; try again",
            )
            return
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    @property
    def busy(self) -> bool:
        """Whether a request is being answered (or waits, pipelined) on this connection."""
        return self.cycle is not None and not self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        room = self._header_room
        if room is None or len(data) <= room:
            if room is not None:
                self._header_room = room - len(data)
            super().data_received(data)
            return
        # More than the headers may still take: parse what fits; the rest only if they ended.
        self._header_room = 0
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._header_room == 0:
            limit = self.limits.max_header_bytes
            detail = f"the request line and headers exceed {limit} bytes"
            self._close("headers too large", 431, None, detail, answer=not self.busy)
            return
        self.data_received(data[room:])

    def on_message_begin(self) -> None:
        self._request_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        self._header_room = None
        self._request_begun = False
        super().on_headers_complete()
        pipelined = bool(self.pipeline) and self.pipeline[0][0] is self.cycle
        if not pipelined and not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm("body")  # a bodiless request completes at once, which disarms it

    def on_message_complete(self) -> None:
        if self._phase == "body":
            self._cancel_deadline()
        self._header_room = self.limits.max_header_bytes
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self.idle_since = time.monotonic()
        if self.cycle.response_complete:  # nothing in flight: the next request may begin
            self._arm("headers")
        elif not self.pipeline and self.cycle.more_body:  # the last pipelined one started
            self._arm("body")

    def handle_websocket_upgrade(self) -> None:
        self._cancel_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (request line, header syntax, chunk sizes, URL): a 400
        problem+json, where uvicorn would answer text/plain, unless an answer is half-written."""
        cycle = self.cycle
        answer = cycle is None or cycle.response_complete or not cycle.response_started
        detail = "the request is not valid HTTP/1.1 and could not be parsed"
        self._close("unparsable request", 400, None, detail, answer=answer)

    # ------------------------------------------------------------------------------ deadlines

    def _arm(self, phase: Phase) -> None:
        self._cancel_deadline()
        self._phase = phase
        if phase == "headers":
            self._deadline = self.loop.call_later(
                self.limits.header_timeout_seconds, self._headers_overdue
            )
        else:
            self._deadline = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_overdue
            )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = None

    def _headers_overdue(self) -> None:
        self._deadline = self._phase = None
        if self.transport.is_closing():
            return
        seconds = self.limits.header_timeout_seconds
        detail = f"the request headers did not arrive within {seconds:g} s"
        self._close("header deadline", 408, None, detail, answer=self._request_begun)

    def _body_overdue(self) -> None:
        self._deadline = self._phase = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            # The server stopped reading, or has not asked for the body yet (Expect: 100-continue).
            self._arm("body")
            return
        seconds = self.limits.body_timeout_seconds
        detail = f"the request body did not arrive within {seconds:g} s"
        answer = not self.cycle.response_started
        self._close(
            "body deadline", 408, None, detail, answer=answer, instance=self.cycle.scope["path"]
        )

    # --------------------------------------------------------------------- connection limit

    def _make_room(self) -> bool:
        """Close the connection idle longest if the cap is reached; False if all are busy."""
        open_connections = 0
        victim: GuardedHttpToolsProtocol | None = None
        for connection in self.connections:
            if connection is self:
                continue
            if isinstance(connection, GuardedHttpToolsProtocol):
                if connection.transport.is_closing():
                    continue  # closed already, until its connection_lost runs
                if not connection.busy and (
                    victim is None or connection.idle_since < victim.idle_since
                ):
                    victim = connection
            open_connections += 1
        if open_connections < self.limits.max_connections:
            return True
        if victim is None:
            return False
        victim.transport.close()
        _report(self.server_state, self.loop, "idle, evicted at the connection cap")
        return True

    # ----------------------------------------------------------------------------- answers

    def _close(
        self,
        reason: str,
        status: int,
        code: str | None,
        detail: str,
        *,
        answer: bool = True,
        instance: str | None = None,
    ) -> None:
        """Close the connection, with a problem+json answer if `answer`; the request (if any)
        sees a disconnect and what the application sends afterwards is dropped."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            self.transport.write(self._problem_bytes(status, code, detail, instance))
        self.transport.close()
        _report(self.server_state, self.loop, reason)

    def _problem_bytes(
        self, status: int, code: str | None, detail: str, instance: str | None
    ) -> bytes:
        body = _problem_body(status, code, detail, instance)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        for name, value in _SECURITY_HEADERS:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/problem+json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if status == 503:
            head.append(b"retry-after: 1\r\n")
        head.append(b"connection: close\r\n\r\n")
        return b"".join(head) + body


def _problem_body(status: int, code: str | None, detail: str, instance: str | None) -> bytes:
    """As problems.py answers: a FacedemoError's code (`overloaded`), or else, as for Starlette's
    HTTPException, type about:blank and the status phrase as title and code."""
    if code == OverloadedError.code:
        problem = Problem(
            type=PROBLEM_TYPE_BASE + code,
            title=OverloadedError.title,
            status=status,
            detail=detail,
            instance=instance,
            code=code,
        )
    else:
        phrase = http.HTTPStatus(status).phrase
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        problem = Problem(title=phrase, status=status, detail=detail, instance=instance, code=code)
    content = problem.model_dump(mode="json", exclude_none=True)
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class _CloseReport:
    """The first close is logged at once; those in the next second are summed in one line."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.window: asyncio.TimerHandle | None = None

    def note(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        if self.window is None:
            logger.info("closed a connection: %s", reason)
            self.window = loop.call_later(REPORT_INTERVAL_SECONDS, self.flush, loop)
        else:
            self.counts[reason] += 1

    def flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self.window = None
        if self.counts:
            summary = ", ".join(f"{count} {reason}" for reason, count in self.counts.items())
            logger.info(
                "closed %d connections in %g s: %s",
                sum(self.counts.values()),
                REPORT_INTERVAL_SECONDS,
                summary,
            )
            self.counts.clear()
            self.window = loop.call_later(REPORT_INTERVAL_SECONDS, self.flush, loop)


_reports: weakref.WeakKeyDictionary[ServerState, _CloseReport] = weakref.WeakKeyDictionary()


def _report(server_state: ServerState, loop: asyncio.AbstractEventLoop, reason: str) -> None:
    report = _reports.get(server_state)
    if report is None:
        report = _reports[server_state] = _CloseReport()
    report.note(loop, reason)
