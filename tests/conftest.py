"""Shared fixtures: tiny random-weight model bundles, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.bundles import write_tiny_bundles


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding a 32x32 classifier and regressor bundle, version 1.0.0.

    The weights come from fixed seeds, so every test sees the same predictions. Treat the folder
    as read-only: copy it (shutil.copytree) before damaging a bundle.
    """
    models_dir = tmp_path_factory.mktemp("models")
    write_tiny_bundles(models_dir)
    return models_dir
