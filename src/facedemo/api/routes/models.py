"""GET /models and /models/{name}: the bundles' manifests, the face detector and the device."""

from __future__ import annotations

from fastapi import APIRouter

from facedemo.api.deps import RegistryDep, ServingDep
from facedemo.api.problems import problem_responses
from facedemo.api.routing import DocumentedRoute
from facedemo.registry import Registry
from facedemo.schemas import DeviceInfo, ModelInfo, ModelsResponse

router = APIRouter(
    prefix="/models",
    tags=["models"],
    responses=problem_responses(500, 503),
    route_class=DocumentedRoute,
)


@router.get("", response_model=ModelsResponse)
async def list_models(registry: RegistryDep, serving: ServingDep) -> ModelsResponse:
    """List the loaded models with their manifests, the face detector and the device in use."""
    return ModelsResponse(
        device=DeviceInfo.model_validate(registry.device_info),
        models=[_model_info(registry, name) for name in sorted(registry.manifests())],
        detector=serving.pipeline.detector_info(),
    )


@router.get("/{name}", response_model=ModelInfo, responses=problem_responses(404, 422))
async def get_model(name: str, registry: RegistryDep) -> ModelInfo:
    """Show one loaded model's manifest.

    An unknown name is a 404 whose detail lists the loaded models.
    """
    return _model_info(registry, name)


def _model_info(registry: Registry, name: str) -> ModelInfo:
    manifest = registry.manifest(name)
    return ModelInfo(**dict(manifest), device=DeviceInfo.model_validate(registry.device_info))
