"""Security headers on every answer, and the Content-Security-Policy of each page.

`SecurityHeadersMiddleware` (outermost in api/middleware.py, so 401s, 413s, 404s and 500s get
them too) adds to every HTTP response:

    X-Content-Type-Options: nosniff   a browser never guesses a type: an upload or a problem
                                      echoed back is never run as HTML or script
    Referrer-Policy: no-referrer      the pages' URLs (?detect=..., paths) go nowhere else
    X-Frame-Options: DENY             no framing (clickjacking), for browsers older than CSP's
                                      frame-ancestors
    Content-Security-Policy           API_POLICY, unless the route set its own (the pages do)
    Cache-Control                     no-store (answers are about people's photos), or no-cache
                                      under /static/ (cached, revalidated by ETag), unless set

uvicorn's `server` banner is switched off where uvicorn is configured (cli/serve.py). The
answers the connection guard writes itself (api/connections.py: 400 for what cannot be parsed,
408, 431, its 503) carry the same headers; only uvicorn's last-resort 500, for an exception
raised past every middleware, does not.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BASELINE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
API_CACHE_CONTROL = "no-store"
STATIC_CACHE_CONTROL = "no-cache"

# What every policy starts from: nothing may load, no <base>, no form posts, no framing.
_LOCKED_DOWN = {
    "default-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'none'",
}
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(**directives: str) -> str:
    """A policy that allows only `directives` (script_src="'self'" -> script-src 'self')."""
    allowed = dict(_LOCKED_DOWN)
    allowed.update((name.replace("_", "-"), value) for name, value in directives.items())
    return "; ".join(f"{name} {value}" for name, value in allowed.items())


# JSON, problems, metrics: nothing in them is meant to run or load anything.
API_POLICY = content_security_policy()
# The demo page (static/): its own script and style sheet, and fetch() to this server.
DEMO_PAGE_POLICY = content_security_policy(
    script_src="'self'", style_src="'self'", img_src="'self'", connect_src="'self'"
)


def inline_script_hashes(html: str) -> str:
    """CSP sources ('sha256-...') for each inline <script> of `html`, space-separated.

    A hash lets a page's one bootstrap script run without 'unsafe-inline', which would let any
    injected script run too; a nonce would need the HTML to carry it, which FastAPI's docs pages
    have no place for.
    """
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in _INLINE_SCRIPT.findall(html)
    )


class SecurityHeadersMiddleware:
    """Add the headers above to every HTTP response `app` sends."""

    def __init__(self, app: ASGIApp, *, static_prefix: str) -> None:
        """Wrap `app`; responses under `static_prefix` are the cacheable assets."""
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response's start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_static = scope["path"].startswith(self.static_prefix)
        cache_control = STATIC_CACHE_CONTROL if is_static else API_CACHE_CONTROL

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])  # optional in ASGI; MutableHeaders needs it
                headers = MutableHeaders(scope=message)
                for name, value in BASELINE_HEADERS.items():
                    headers[name] = value
                headers.setdefault("Content-Security-Policy", API_POLICY)
                headers.setdefault("Cache-Control", cache_control)
            await send(message)

        await self.app(scope, receive, send_with_headers)
