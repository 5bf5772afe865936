"""The bundles committed in models/: complete, untampered, within the contract and the size cap.

No TensorFlow: these are the checks the registry makes before it loads a model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from facedemo.bundles import REQUIRED_MODELS, available_versions, check_contract, read_manifest
from facedemo.manifest import MODEL_FILE

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MAX_MODEL_BYTES = 10 * 1024 * 1024


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_every_committed_version_passes_the_registry_checks(name: str) -> None:
    versions = available_versions(MODELS_DIR, name)
    assert versions, f"no committed bundle for {name}"
    for version in versions:
        bundle = MODELS_DIR / name / version
        manifest = read_manifest(bundle)  # files, manifest, sha256
        check_contract(manifest)
        assert (bundle / MODEL_FILE).stat().st_size < MAX_MODEL_BYTES
        assert manifest.flops_per_face is not None and manifest.flops_per_face < 100_000_000
        validation = manifest.metrics["validation"]
        assert validation["n"] > 2000  # measured on the real validation split, not a smoke run
