"""Dependencies for routes, as Annotated aliases: `settings: SettingsDep`, `serving: ServingDep`.

They are `async def` because they only read app state: FastAPI would run plain functions in a
worker thread, a needless hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from facedemo.api.access_log import RequestContext, request_context
from facedemo.api.prometheus import ServiceMetrics
from facedemo.api.state import ServiceState
from facedemo.config import Settings
from facedemo.registry import Registry
from facedemo.serving import Serving


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_service_state(request: Request) -> ServiceState:
    """The lifespan's record of the models: loading, ready or failed."""
    state: ServiceState = request.app.state.service
    return state


ServiceStateDep = Annotated[ServiceState, Depends(get_service_state)]


async def get_registry(state: ServiceStateDep) -> Registry:
    """The loaded registry; NotReadyError (503) while loading or after a failed load."""
    return state.require_registry()


async def get_serving(state: ServiceStateDep) -> Serving:
    """The serving side; NotReadyError (503) while loading or after a failed load."""
    return state.require_serving()


async def get_metrics(request: Request) -> ServiceMetrics:
    """The application's Prometheus metrics."""
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_request_context(request: Request) -> RequestContext:
    """This request's id and access-log notes, set up by AccessLogMiddleware."""
    return request_context(request.scope)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
ServingDep = Annotated[Serving, Depends(get_serving)]
RequestContextDep = Annotated[RequestContext, Depends(get_request_context)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
