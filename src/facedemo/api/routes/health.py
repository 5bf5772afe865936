"""GET /livez and /readyz: probes for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from facedemo.api.deps import RegistryDep, ServiceStateDep
from facedemo.api.problems import problem_responses
from facedemo.api.routing import DocumentedRoute
from facedemo.errors import NotReadyError
from facedemo.schemas import DeviceInfo, Liveness, ModelRef, Readiness

router = APIRouter(
    prefix="", tags=["health"], responses=problem_responses(500), route_class=DocumentedRoute
)


@router.get("/livez", response_model=Liveness)
async def livez() -> Liveness:
    """Report that the process is alive.

    Always 200 while the process answers, also while models load or after they failed to.
    """
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses=problem_responses(503))
async def readyz(registry: RegistryDep, state: ServiceStateDep) -> Readiness:
    """Report whether every model is loaded and warmed up, and the service keeps its deadline.

    503 with the reason: still loading, the load error, or saturated (requests wait longer than
    half their deadline, or one missed it in the last seconds), so that a load balancer sends
    traffic elsewhere until the backlog is worked off.
    """
    saturation = state.require_serving().saturation()
    if saturation is not None:
        raise NotReadyError(f"saturated: {saturation}")
    return Readiness(
        models=[
            ModelRef(name=name, version=manifest.version)
            for name, manifest in sorted(registry.manifests().items())
        ],
        device=DeviceInfo.model_validate(registry.device_info),
    )
