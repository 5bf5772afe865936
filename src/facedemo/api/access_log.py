"""`AccessLogMiddleware`: a request id for every request, and one log line when it is answered.

The id is the caller's `X-Request-ID` when that is 1-128 characters of [A-Za-z0-9._-], else a
fresh uuid4 hex; it is echoed in the `X-Request-ID` response header and, through
`RequestContext`, used as the `request_id` of prediction responses. The line goes to the
`facedemo.access` logger (JSON, see logging_config.py) with: request_id, method, route (the
template, e.g. /models/{name}; null when no route matched), status, latency_ms, faces (when a
route reported them), upload_bytes (request body bytes received) and client (a keyed hash of the
address, stable within one process only). Never the body, the query string or a header value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
SCOPE_KEY = "facedemo.request"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Keyed per process: a plain hash of an IPv4 address is reversed by trying all 2**32 of them.
_CLIENT_KEY = secrets.token_bytes(32)

logger = logging.getLogger("facedemo.access")


@dataclass
class RequestContext:
    """One request's id, and what its route reports to the access log."""

    request_id: str
    faces: int | None = None


def request_context(scope: Scope) -> RequestContext:
    """The context AccessLogMiddleware attached to this request's scope."""
    context: RequestContext = scope[SCOPE_KEY]
    return context


class AccessLogMiddleware:
    """Give each HTTP request an id and log one structured line once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap `app`; put this outermost so every answer, 401s and 500s too, is logged."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request with an id in its scope, count its body, then log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id=incoming_request_id(scope) or uuid.uuid4().hex)
        scope[SCOPE_KEY] = context
        started = time.perf_counter()
        status = 500  # what the client sees when the application fails before answering
        upload_bytes = 0

        async def counting_receive() -> Message:
            nonlocal upload_bytes
            message = await receive()
            if message["type"] == "http.request":
                upload_bytes += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, context.request_id)
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", None)
            fields: dict[str, Any] = {
                "request_id": context.request_id,
                "method": scope["method"],
                "route": route,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "faces": context.faces,
                "upload_bytes": upload_bytes,
                "client": _client_hash(scope),
            }
            logger.info("%s %s %s", scope["method"], route or "-", status, extra={"fields": fields})


def incoming_request_id(scope: Scope) -> str | None:
    """The caller's X-Request-ID if it is a safe id to echo and log; else None."""
    value = Headers(scope=scope).get(REQUEST_ID_HEADER)
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return None


def _client_hash(scope: Scope) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    return hmac.new(_CLIENT_KEY, str(client[0]).encode(), hashlib.sha256).hexdigest()[:16]
