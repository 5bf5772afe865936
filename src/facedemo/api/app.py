"""`create_app()`: the FastAPI application, its lifespan (model loading) and its routers."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import anyio.to_thread
from fastapi import FastAPI

from facedemo import __version__
from facedemo.allocator import tune_allocator
from facedemo.api.middleware import BATCH_PATH, install_middleware
from facedemo.api.problems import install_problem_handlers
from facedemo.api.prometheus import ServiceMetrics
from facedemo.api.routes import batch, demo, docs, health, metrics, models, predict
from facedemo.api.state import ServiceState
from facedemo.api.uploads import document_uploads
from facedemo.batching import BatchingPredictor
from facedemo.config import Settings, get_settings
from facedemo.detection import FaceDetector, load_detector
from facedemo.errors import FacedemoError
from facedemo.pipeline import Pipeline
from facedemo.registry import Registry, stop_if_asked
from facedemo.serving import MemoryBudget, Serving

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Estimates age (years with an interval, and an age bucket) and gender, with probabilities, for the
faces in a photo. Errors are `application/problem+json` (RFC 9457) with a stable `code`.
"""


LoadFailureHandler = Callable[[str], None]


def create_app(
    settings: Settings | None = None, *, on_load_failure: LoadFailureHandler | None = None
) -> FastAPI:
    """Build the application; `settings` defaults to the environment's (FACEDEMO_*).

    Models load in the background once the application starts: `/livez` answers at once,
    `/readyz` and the model routes answer 503 until loading has finished. A failed load is final:
    what it reads (bundles, device, settings) does not change while the process runs, so the
    error is logged, the routes answer 503 with the reason, and `on_load_failure(reason)` is
    called; `facedemo serve` passes one that ends the process, so that the orchestrator sees it.
    """
    settings = settings or get_settings()
    app = FastAPI(
        title="facedemo",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan,
        # operationIds like "predict" and "get_model" instead of "predict_predict_post"
        generate_unique_id_function=lambda route: route.name,
        # FastAPI's own pages load their scripts from a CDN; routes/docs.py serves them locally.
        docs_url=None,
        redoc_url=None,
        # A slash redirect's Location is built from the Host header, which the client controls.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.on_load_failure = on_load_failure
    app.state.service = ServiceState()  # "loading" until the lifespan starts the loader
    app.state.metrics = ServiceMetrics()  # per app: tests build many apps in one process
    # One budget for request bodies (the admission middleware) and decoding (serving.py).
    app.state.memory_budget = MemoryBudget(settings.memory_budget_bytes)
    install_problem_handlers(app)
    install_middleware(app, settings, app.state.metrics, app.state.memory_budget)
    document_uploads(app, max_files={BATCH_PATH: settings.max_batch_images})
    for module in (predict, batch, models, health, demo, docs, metrics):
        app.include_router(module.router)
    # Before /static: the first mount whose prefix matches a path serves it.
    app.mount(docs.DOCS_ASSETS_PATH, docs.docs_assets(), name="docs-assets")
    app.mount(demo.STATIC_PATH, demo.static_files(), name="static")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    tune_allocator()  # before the models and the first uploads are allocated
    state = ServiceState()
    app.state.service = state
    stop_loading = threading.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(
            _load_models,
            state,
            settings,
            app.state.metrics,
            app.state.memory_budget,
            app.state.on_load_failure,
            stop_loading,
        )
        yield
        tasks.cancel_scope.cancel()
        # A load still running ends at its next step, rather than load models nobody will use.
        stop_loading.set()
    if state.serving is not None:
        state.serving.shutdown()
    if state.batcher is not None:  # in-flight requests have finished: this only drains leftovers
        await anyio.to_thread.run_sync(state.batcher.stop, settings.shutdown_timeout_seconds)


async def _load_models(
    state: ServiceState,
    settings: Settings,
    service_metrics: ServiceMetrics,
    memory_budget: MemoryBudget,
    on_load_failure: LoadFailureHandler | None,
    stop: threading.Event | None = None,
) -> None:
    """Load and warm the models in a worker thread, start the batcher; record it in `state`."""
    load = partial(_load_registry_and_detector, settings, stop)
    try:
        registry, detector = await anyio.to_thread.run_sync(load, abandon_on_cancel=True)
    except FacedemoError as error:
        logger.error("models not loaded, the service cannot become ready: %s", error.detail)
        _give_up(state, error.detail, on_load_failure)
        return
    except Exception as error:  # a bug or a broken install: just as final, and needs the trace
        logger.exception("models not loaded, the service cannot become ready")
        _give_up(state, f"{type(error).__name__}: {error}", on_load_failure)
        return
    # TensorFlow, Keras and the models leave some 340,000 objects that live as long as the process;
    # each full collection walked them all (about 0.1 s with the GIL held, longer on a busy
    # machine: every request in flight stalled). Frozen, the collector skips them.
    gc.collect()
    gc.freeze()
    batcher = BatchingPredictor.from_settings(registry, settings, observer=service_metrics)
    batcher.start()
    service_metrics.set_models(
        {name: manifest.version for name, manifest in registry.manifests().items()},
        registry.device,
    )
    pipeline = Pipeline(registry, settings, detector, batcher)
    state.mark_ready(registry, Serving(pipeline, settings, memory_budget, batcher), batcher)
    logger.info("ready: %s on %s", ", ".join(registry.manifests()), registry.device)


def _give_up(state: ServiceState, reason: str, on_load_failure: LoadFailureHandler | None) -> None:
    state.mark_failed(reason)
    if on_load_failure is not None:
        on_load_failure(reason)


def _load_registry_and_detector(
    settings: Settings, stop: threading.Event | None = None
) -> tuple[Registry, FaceDetector]:
    """The loaded, warmed models, and the warmed face detector (FACEDEMO_DETECTOR)."""
    registry = Registry.from_settings(settings, stop)
    stop_if_asked(stop)
    return registry, load_detector(settings, registry.device)
