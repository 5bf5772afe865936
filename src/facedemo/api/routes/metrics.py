"""GET /metrics: the service's Prometheus metrics (see api/prometheus.py for the list).

With API keys configured it needs one unless FACEDEMO_API_KEYS_PROTECT_METRICS is false (the
check is ApiKeyMiddleware's, api/security.py). Left out of the OpenAPI document: it is for
scrapers, in the Prometheus text format, not part of the JSON API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from facedemo.api.prometheus import ServiceMetrics

router = APIRouter(tags=["metrics"], include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Report the metrics in the Prometheus text exposition format."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return Response(service_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
