"""`install_middleware`: the service's middleware stack, outermost first.

    SecurityHeadersMiddleware nosniff, CSP, no framing or referrer, Cache-Control (api/headers.py)
    AccessLogMiddleware      request id and one access line, for every answer (500s included)
    RequestMetricsMiddleware Prometheus request counts and latencies (api/prometheus.py)
    ServerErrorMiddleware    Starlette's: unhandled exceptions -> the 500 problem
    ApiKeyMiddleware         401 before anything reads the body, when keys are configured
    UploadLimitMiddleware    413 for bodies over their limit, before or while they arrive
    MemoryAdmissionMiddleware 503 for bodies the memory budget cannot hold (api/admission.py)
    ExceptionMiddleware      Starlette's: FacedemoError and friends -> problems (api/problems.py)
    routes

All of them are pure ASGI: BaseHTTPMiddleware would buffer bodies and break streaming.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp

from facedemo.api.access_log import AccessLogMiddleware
from facedemo.api.admission import MemoryAdmissionMiddleware
from facedemo.api.headers import SecurityHeadersMiddleware
from facedemo.api.limits import UploadLimitMiddleware, UploadLimits
from facedemo.api.prometheus import RequestMetricsMiddleware, ServiceMetrics
from facedemo.api.routes.demo import STATIC_PATH
from facedemo.api.security import ApiKeyMiddleware, ApiKeyPolicy, document_api_keys
from facedemo.config import Settings
from facedemo.serving import MemoryBudget

# The one route that takes several files (api/routes/batch.py); every other path takes one.
BATCH_PATH = "/predict/batch"


def install_middleware(
    app: FastAPI, settings: Settings, metrics: ServiceMetrics, budget: MemoryBudget
) -> None:
    """Add the stack above to `app`, configured from `settings`, counting into `metrics`, and
    charging request bodies to `budget`."""
    limits = UploadLimits(settings.max_upload_bytes, {BATCH_PATH: settings.max_batch_images})
    # Uploads must never touch the disk: Starlette spools a file part to a temporary file once it
    # passes spool_max_size, so make that at least the largest body the limits let through.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, limits.largest_body_limit)
    policy = ApiKeyPolicy.from_settings(settings)
    app.add_middleware(MemoryAdmissionMiddleware, budget=budget)  # added first: innermost
    app.add_middleware(UploadLimitMiddleware, limits=limits)
    if policy.enabled:
        app.add_middleware(ApiKeyMiddleware, policy=policy)
        document_api_keys(app, policy)
    # add_middleware cannot reach outside ServerErrorMiddleware; wrapping the built stack can.
    build_stack = app.build_middleware_stack

    def build_logged_stack() -> ASGIApp:
        logged = AccessLogMiddleware(RequestMetricsMiddleware(build_stack(), metrics=metrics))
        return SecurityHeadersMiddleware(logged, static_prefix=STATIC_PATH + "/")

    app.build_middleware_stack = build_logged_stack  # type: ignore[method-assign]
