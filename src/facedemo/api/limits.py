"""`UploadLimitMiddleware`: request bodies over their limit get 413 without being read whole.

The limit of a request body, in bytes, is

    files(path) * (FACEDEMO_MAX_UPLOAD_BYTES + PART_ALLOWANCE_BYTES)

where files(path) is how many files the route takes (FACEDEMO_MAX_BATCH_IMAGES for
/predict/batch, 1 for every other path) and PART_ALLOWANCE_BYTES (16 KiB) covers each multipart
part's boundary line and headers. A declared Content-Length over the limit is refused before the
application runs; a body without one (chunked) or one that lies is counted as it arrives and
refused the moment the count passes the limit. Each file is then held to max_upload_bytes by the
route itself (`read_upload`), so the allowance never lets a larger image through.

It is a pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer the body it guards.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facedemo.api.problems import problem_for, problem_response
from facedemo.errors import UploadTooLarge

PART_ALLOWANCE_BYTES = 16 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """The body limit of each path: see the module docstring for the rule."""

    max_upload_bytes: int
    files_per_path: Mapping[str, int] = field(default_factory=dict)  # paths taking several

    def body_limit(self, path: str) -> int:
        """The most bytes a request body to `path` may have."""
        return self.files_per_path.get(path, 1) * (self.max_upload_bytes + PART_ALLOWANCE_BYTES)

    @property
    def largest_body_limit(self) -> int:
        """The limit of the most generous path: no upload part can be larger than this."""
        return max([self.body_limit("/"), *map(self.body_limit, self.files_per_path)])


class UploadLimitMiddleware:
    """Refuse request bodies over their limit with a 413 problem, before or while they arrive."""

    def __init__(self, app: ASGIApp, *, limits: UploadLimits) -> None:
        """Guard `app` with `limits`."""
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting `receive`, or answer 413 in its place."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        if declared_length(scope) > limit:
            await _refuse(scope, send, limit)
            return
        guard = _BodyGuard(receive, send, limit)
        try:
            await self.app(scope, guard.receive, guard.send)
        except UploadTooLarge:
            if not guard.exceeded:
                raise
        if guard.exceeded and not guard.response_started:
            await _refuse(scope, send, limit)


class _BodyGuard:
    """Counts body bytes as the application receives them; raises once they pass the limit.

    After that, whatever the application answers (its handlers may turn the exception into a
    400 "cannot parse the body") is dropped, so the client always hears the same 413.
    """

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive, self._send, self._limit = receive, send, limit
        self.received = 0
        self.exceeded = False
        self.response_started = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise UploadTooLarge(_detail(self._limit))
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                self.exceeded = True
                raise UploadTooLarge(_detail(self._limit))
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.response_started:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)


async def _refuse(scope: Scope, send: Send, limit: int) -> None:
    async def no_body() -> Message:  # the response never reads the request body
        return {"type": "http.disconnect"}

    # Connection: close, because the rest of the body is never read off the connection.
    response = problem_response(
        problem_for(UploadTooLarge(_detail(limit)), instance=scope["path"]),
        headers={"Connection": "close"},
    )
    await response(scope, no_body, send)


def _detail(limit: int) -> str:
    return f"the request body is larger than the limit of {limit} bytes"


def declared_length(scope: Scope) -> int:
    """The Content-Length header's value; 0 when absent or not a number (then bytes are counted)."""
    value = Headers(scope=scope).get("content-length", "")
    if not (value.isascii() and value.isdigit()):
        return 0
    # Python refuses to parse integers of thousands of digits; any such length is too large.
    return int(value) if len(value) <= 18 else sys.maxsize
