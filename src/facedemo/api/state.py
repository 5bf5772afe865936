"""What the service knows about its models while it runs: loading, ready, or failed and why."""

from __future__ import annotations

from dataclasses import dataclass

from facedemo.batching import BatchingPredictor
from facedemo.errors import NotReadyError
from facedemo.pipeline import Pipeline
from facedemo.registry import Registry


@dataclass
class ServiceState:
    """Set by the lifespan's loader on the event loop; read by the dependencies in deps.py."""

    registry: Registry | None = None
    pipeline: Pipeline | None = None
    failure: str | None = None
    batcher: BatchingPredictor | None = None  # the pipeline's; the lifespan stops it

    def mark_ready(
        self, registry: Registry, pipeline: Pipeline, batcher: BatchingPredictor | None = None
    ) -> None:
        """Models are loaded and warmed: start answering predictions."""
        self.registry, self.pipeline, self.batcher = registry, pipeline, batcher

    def mark_failed(self, reason: str) -> None:
        """Loading failed, for good: not ready, and say why (until the process ends)."""
        self.failure = reason

    def require_registry(self) -> Registry:
        """The loaded registry, or NotReadyError saying whether models are loading or failed."""
        if self.registry is None:
            raise self._not_ready()
        return self.registry

    def require_pipeline(self) -> Pipeline:
        """The pipeline over the loaded registry; NotReadyError as in `require_registry`."""
        if self.pipeline is None:
            raise self._not_ready()
        return self.pipeline

    def _not_ready(self) -> NotReadyError:
        if self.failure is not None:
            return NotReadyError(f"models failed to load: {self.failure}")
        return NotReadyError("models are still loading")
