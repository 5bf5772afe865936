"""GET /livez and /readyz: probes for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from facedemo.api.deps import RegistryDep
from facedemo.api.problems import problem_responses
from facedemo.api.routing import DocumentedRoute
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
async def readyz(registry: RegistryDep) -> Readiness:
    """Report whether every model is loaded and warmed up.

    503 with the reason (still loading, or the load error) until then.
    """
    return Readiness(
        models=[
            ModelRef(name=name, version=manifest.version)
            for name, manifest in sorted(registry.manifests().items())
        ],
        device=DeviceInfo.model_validate(registry.device_info),
    )
