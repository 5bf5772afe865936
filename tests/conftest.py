"""Shared fixtures: tiny random-weight bundles and a registry over them, built once a session.

TensorFlow is imported inside the fixtures, so test files that do not use them start quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.served import Served

    from facedemo.registry import Registry


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


@pytest.fixture(scope="session")
def tiny_server(
    tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """`facedemo serve` over `tiny_models_dir` on a free port; it needs served.TINY_SERVER_KEY."""
    from tests.served import TINY_SERVER_KEY, served

    log = tmp_path_factory.mktemp("served") / "server.log"
    with served(tiny_models_dir, log, api_keys=TINY_SERVER_KEY) as server:
        yield server
