"""What the service knows about its models while it runs: loading, ready, or failed and why."""

from __future__ import annotations

from dataclasses import dataclass

from facedemo.batching import BatchingPredictor
from facedemo.errors import NotReadyError
from facedemo.pipeline import Pipeline
from facedemo.registry import Registry
from facedemo.serving import Serving


@dataclass
class ServiceState:
    """Set by the lifespan's loader on the event loop; read by the dependencies in deps.py."""

    registry: Registry | None = None
    serving: Serving | None = None
    failure: str | None = None
    batcher: BatchingPredictor | None = None  # the pipeline's; the lifespan stops it

    def mark_ready(
        self, registry: Registry, serving: Serving, batcher: BatchingPredictor | None = None
    ) -> None:
        """Models are loaded and warmed: start answering predictions."""
        self.registry, self.serving, self.batcher = registry, serving, batcher

    @property
    def pipeline(self) -> Pipeline | None:
        """The served pipeline, once ready."""
        return None if self.serving is None else self.serving.pipeline

    def mark_failed(self, reason: str) -> None:
        """Loading failed, for good: not ready, and say why (until the process ends)."""
        self.failure = reason

    def require_registry(self) -> Registry:
        """The loaded registry, or NotReadyError saying whether models are loading or failed."""
        if self.registry is None:
            raise self._not_ready()
        return self.registry

    def require_serving(self) -> Serving:
        """The serving side over the loaded models; NotReadyError as in `require_registry`."""
        if self.serving is None:
            raise self._not_ready()
        return self.serving

    def _not_ready(self) -> NotReadyError:
        if self.failure is not None:
            return NotReadyError(f"models failed to load: {self.failure}")
        return NotReadyError("models are still loading")
