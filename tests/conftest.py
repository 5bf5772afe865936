"""Shared fixtures: tiny random-weight bundles, a registry and a ready app over them.

TensorFlow is imported inside the fixtures, so test files that do not use them start quickly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from selenium.webdriver.remote.webdriver import WebDriver
    from tests.served import Served

    from facedemo.registry import Registry


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Async tests and fixtures run on asyncio (module-scoped, as the app fixtures below are)."""
    return "asyncio"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium through chromedriver, with a fresh profile; skips when not installed."""
    from tests.browser import BrowserMissing, chromium

    try:
        with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
            yield driver
    except BrowserMissing as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding a 32x32 classifier and regressor bundle, version 1.0.0.

    The weights come from fixed seeds, so every test sees the same predictions. Treat the folder
    as read-only: copy it (shutil.copytree) before damaging a bundle.
    """
    from tests.bundles import write_tiny_bundles

    models_dir = tmp_path_factory.mktemp("models")
    write_tiny_bundles(models_dir)
    return models_dir


@pytest.fixture(scope="session")
def tiny_registry(tiny_models_dir: Path) -> Registry:
    """A Registry loaded (and warmed up) from `tiny_models_dir` on the default device choice."""
    from facedemo.registry import Registry

    return Registry.load(tiny_models_dir)


@pytest.fixture(scope="module")
def ready_app(tiny_models_dir: Path) -> FastAPI:
    """An app over `tiny_models_dir` with default settings, one per test module."""
    from facedemo.api.app import create_app
    from facedemo.config import Settings

    return create_app(Settings(models_dir=tiny_models_dir))


@pytest.fixture(scope="module")
async def client(ready_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of `ready_app`, its lifespan started and its models ready."""
    from tests.in_process import running, settled_readiness

    async with running(ready_app) as client:
        assert (await settled_readiness(client)).status_code == 200
        yield client


@pytest.fixture(scope="session")
def tiny_server(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`facedemo serve` over `tiny_models_dir` on a free port; it needs served.TINY_SERVER_KEY."""
    from tests.served import TINY_SERVER_KEY, served

    log = tmp_path_factory.mktemp("served") / "server.log"
    with served(tiny_models_dir, log, api_keys=TINY_SERVER_KEY) as server:
        yield server
