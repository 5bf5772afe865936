"""Optional API keys: with FACEDEMO_API_KEYS set, requests must carry one of them.

A key is sent as `X-API-Key: <key>` or, without that header, `Authorization: Bearer <key>`.
The probes /livez and /readyz are always open; /docs, /redoc, /openapi.json, the demo page `/`
and /static follow `api_keys_protect_docs`, /metrics follows `api_keys_protect_metrics`, and
every other path needs a key (so an unknown path answers 401, not 404, to a caller without one).
A refusal is a 401 problem (code `unauthorized`) with `WWW-Authenticate: Bearer`.

Keys are held as SHA-256 digests and compared with `hmac.compare_digest` against every key, with
no early exit, so neither the position of a matching key nor a near-miss shows in the timing.
Keys never appear in logs, error details or the settings' repr (they are SecretStr).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facedemo.api.problems import PROBLEM_MEDIA_TYPE, problem_for, problem_response
from facedemo.config import Settings
from facedemo.errors import AuthenticationError

OPEN_PATHS = frozenset({"/livez", "/readyz"})
DOCS_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_PREFIX = "/static/"
METRICS_PATHS = frozenset({"/metrics"})

API_KEY_HEADER = "X-API-Key"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}


class ApiKeyPolicy:
    """Which paths need a key, and whether a presented key is one of the configured ones."""

    def __init__(
        self, keys: Sequence[SecretStr], *, protect_docs: bool = True, protect_metrics: bool = True
    ) -> None:
        """Hold `keys` as digests; no keys means every path is open."""
        self._key_digests = [_digest(key.get_secret_value()) for key in keys]
        self.protect_docs = protect_docs
        self.protect_metrics = protect_metrics

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyPolicy:
        """The policy FACEDEMO_API_KEYS and the api_keys_protect_* settings describe."""
        return cls(
            settings.api_keys,
            protect_docs=settings.api_keys_protect_docs,
            protect_metrics=settings.api_keys_protect_metrics,
        )

    @property
    def enabled(self) -> bool:
        """Whether any key is configured."""
        return bool(self._key_digests)

    def needs_key(self, path: str) -> bool:
        """Whether a request to `path` must carry a key."""
        if not self._key_digests or path in OPEN_PATHS:
            return False
        if path in DOCS_PATHS or path.startswith(DOCS_PREFIX) or path == DOCS_PREFIX.rstrip("/"):
            return self.protect_docs
        if path in METRICS_PATHS:
            return self.protect_metrics
        return True

    def is_valid(self, presented: str) -> bool:
        """Whether `presented` is one of the keys; compares against all of them, always."""
        digest = _digest(presented)
        matched = False
        for key_digest in self._key_digests:
            matched |= hmac.compare_digest(digest, key_digest)
        return matched


class ApiKeyMiddleware:
    """Answer 401 to requests on protected paths that carry none of the configured keys."""

    def __init__(self, app: ASGIApp, *, policy: ApiKeyPolicy) -> None:
        """Guard `app` with `policy`."""
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 401 before the application (or its body) is touched."""
        if scope["type"] != "http" or not self.policy.needs_key(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = presented_key(Headers(scope=scope))
        if presented is not None and self.policy.is_valid(presented):
            await self.app(scope, receive, send)
            return
        detail = (
            f"this path needs an API key, sent as {API_KEY_HEADER} or Authorization: Bearer"
            if presented is None
            else "the API key is not valid"
        )

        async def no_body() -> Message:  # the refusal never reads the request body
            return {"type": "http.disconnect"}

        response = problem_response(
            problem_for(AuthenticationError(detail), instance=scope["path"]), headers=_CHALLENGE
        )
        await response(scope, no_body, send)


def presented_key(headers: Headers) -> str | None:
    """The key a request carries: X-API-Key, else an Authorization Bearer token; None if neither."""
    key = headers.get(API_KEY_HEADER)
    if key is not None:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def document_api_keys(app: FastAPI, policy: ApiKeyPolicy) -> None:
    """Declare the key schemes in OpenAPI, and a 401 on every operation that needs a key."""
    build_openapi: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build_openapi()
        if schema.get("components", {}).get("securitySchemes") == _SECURITY_SCHEMES:
            return schema  # FastAPI caches the document: decorate it once
        schema.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
        for path, operations in schema.get("paths", {}).items():
            if not policy.needs_key(path):
                continue
            for operation in operations.values():
                operation["security"] = [{name: []} for name in _SECURITY_SCHEMES]
                operation.setdefault("responses", {})["401"] = {
                    "description": "No API key, or not a valid one (code unauthorized).",
                    "content": {
                        PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _digest(key: str) -> bytes:
    # Digests have one length whatever the key's, and compare_digest leaks lengths.
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
