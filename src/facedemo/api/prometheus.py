"""Prometheus metrics of one application: `ServiceMetrics` and the middleware counting requests.

Served at GET /metrics in the Prometheus text format (prometheus-client). Each application has
its own CollectorRegistry, so several apps in one process (the tests) do not share counters; with
`facedemo serve --workers N` every worker process has its own as well, and a scrape through the
shared port sees one worker's figures (see docs/serving.md for why one worker per container).

    facedemo_http_requests_total{method,route,status}      requests answered; route = template
    facedemo_http_request_duration_seconds{method,route}   latency, first byte in to last out
    facedemo_batch_queue_faces                             faces waiting for the models now
    facedemo_batch_queue_wait_seconds                      a request's wait for its batch
    facedemo_batch_size_faces                              faces per model call
    facedemo_model_compute_seconds                         one registry call (both models)
    facedemo_batch_refused_total{reason}                   overloaded, deadline_exceeded
    facedemo_faces_per_image                               faces found in each predicted image
    facedemo_model_info{name,version,device}               1 per loaded model

The probes (/livez, /readyz) and /metrics itself are not counted: scrapers and orchestrators
would drown the traffic they are meant to watch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNCOUNTED_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "unmatched"  # 404s and refusals before routing: one label, not one per path
# Clients may send any method token; unknown ones share a label so they cannot grow the series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)


class ServiceMetrics:
    """Every metric of the service, in a registry of its own; a `BatchObserver` of the batcher."""

    def __init__(self) -> None:
        """Create the metrics in a new CollectorRegistry."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facedemo_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "facedemo_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_faces = Gauge(
            "facedemo_batch_queue_faces",
            "Face crops waiting for a model batch.",
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "facedemo_batch_queue_wait_seconds",
            "Time a request's faces waited in the queue before their batch ran.",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.batch_faces = Histogram(
            "facedemo_batch_size_faces",
            "Face crops per model call (one registry call runs both models).",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.compute_seconds = Histogram(
            "facedemo_model_compute_seconds",
            "Time of one registry call: the classifier and the regressor on one batch.",
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.refused = Counter(
            "facedemo_batch_refused",
            "Requests refused by the batcher, by reason (overloaded, deadline_exceeded).",
            ["reason"],
            registry=self.registry,
        )
        self.faces_per_image = Histogram(
            "facedemo_faces_per_image",
            "Faces found (or, with detect=skip, taken) in each predicted image.",
            buckets=_FACE_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "facedemo_model_info",
            "1 for each loaded model, with its version and the device it runs on.",
            ["name", "version", "device"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The current values in the Prometheus text format."""
        return generate_latest(self.registry)

    def set_models(self, versions: Mapping[str, str], device: str) -> None:
        """Record the loaded models' versions (name -> version) and their device."""
        for name, version in versions.items():
            self.model_info.labels(name=name, version=version, device=device).set(1)

    def observe_faces(self, counts: Iterable[int]) -> None:
        """Record how many faces each predicted image had."""
        for count in counts:
            self.faces_per_image.observe(count)

    # BatchObserver (batching.py)

    def queue_depth_changed(self, faces: int) -> None:
        """`faces` crops are now waiting for a batch."""
        self.queue_faces.set(faces)

    def batch_ran(self, faces: int, compute_seconds: float, waits: Sequence[float]) -> None:
        """A batch of `faces` crops ran in `compute_seconds`; `waits` is each request's wait."""
        self.batch_faces.observe(faces)
        self.compute_seconds.observe(compute_seconds)
        for wait in waits:
            self.queue_wait_seconds.observe(wait)

    def request_refused(self, code: str) -> None:
        """A request failed in the batcher without running."""
        self.refused.labels(reason=code).inc()


class RequestMetricsMiddleware:
    """Count each HTTP request by route template and status, and time it (probes excepted)."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        """Wrap `app`; put it outside ServerErrorMiddleware so that 500s are counted too."""
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, then record its status and latency."""
        if scope["type"] != "http" or scope["path"] in UNCOUNTED_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the application fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
            self.metrics.request_seconds.labels(method=method, route=route).observe(
                time.perf_counter() - started
            )
