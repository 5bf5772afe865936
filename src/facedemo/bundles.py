"""Model bundles on disk: discovery, version choice and checks. No TensorFlow here.

`find_bundle` picks `models_dir/<name>/<version>/` (the newest version unless pinned),
`read_manifest` checks the folder is complete and untampered (files, manifest, sha256, a whole
.keras archive) and `check_contract` that the manifest promises what the service needs from a
model of that name.
The registry loads what these functions accept; `facedemo models` lists bundles with them.
"""

from __future__ import annotations

import logging
import re
import zipfile
import zlib
from pathlib import Path

from pydantic import ValidationError

from facedemo.errors import BundleError
from facedemo.manifest import (
    AGE_BUCKET_LABELS,
    BUNDLE_FILES,
    CLASSIFIER_NAME,
    GENDER_LABELS,
    MANIFEST_FILE,
    MODEL_FILE,
    REGRESSOR_NAME,
    Manifest,
    OutputSpec,
    sha256_file,
    version_key,
)

logger = logging.getLogger(__name__)

REQUIRED_MODELS = (CLASSIFIER_NAME, REGRESSOR_NAME)
EXPECTED_TASKS = {
    CLASSIFIER_NAME: "age-gender-classification",
    REGRESSOR_NAME: "age-regression",
}
_VERSION_PATTERN = re.compile(r"^\d+(\.\d+)*$")


def available_versions(models_dir: Path, name: str) -> list[str]:
    """Versions of `name` under `models_dir`, oldest first; hidden (staging) folders are skipped."""
    name_dir = models_dir / name
    if not name_dir.is_dir():
        return []
    versions = []
    for entry in name_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not _VERSION_PATTERN.match(entry.name):
            logger.warning("ignoring %s: not a version folder like 1.0.0", entry)
            continue
        versions.append(entry.name)
    return sorted(versions, key=version_key)


def find_bundle(models_dir: Path, name: str, pin: str | None = None) -> Path:
    """The folder of `name`'s newest version, or of version `pin`; BundleError if there is none."""
    versions = available_versions(models_dir, name)
    if not versions:
        raise BundleError(
            f"no bundle for model {name!r}: expected {models_dir / name}/<version>/ holding "
            f"{', '.join(BUNDLE_FILES)}"
        )
    if pin is None:
        return models_dir / name / versions[-1]
    if pin not in versions:
        raise BundleError(
            f"model {name!r} is pinned to version {pin!r}, which is not in {models_dir / name}; "
            f"available versions: {', '.join(versions)}"
        )
    return models_dir / name / pin


def read_manifest(bundle_dir: Path) -> Manifest:
    """Check that a `<name>/<version>/` folder is complete and untampered; return its manifest."""
    missing = [file for file in BUNDLE_FILES if not (bundle_dir / file).is_file()]
    if missing:
        raise BundleError(f"bundle {bundle_dir} is incomplete: missing {', '.join(missing)}")
    try:
        manifest = Manifest.model_validate_json((bundle_dir / MANIFEST_FILE).read_bytes())
    except ValidationError as error:
        raise BundleError(
            f"{bundle_dir / MANIFEST_FILE} is not a valid manifest: {error}"
        ) from None
    folder_name, folder_version = bundle_dir.parent.name, bundle_dir.name
    if (manifest.name, manifest.version) != (folder_name, folder_version):
        raise BundleError(
            f"{bundle_dir / MANIFEST_FILE} describes {manifest.name} {manifest.version}, but the "
            f"folder says {folder_name} {folder_version}"
        )
    _check_model_file(bundle_dir / MODEL_FILE, manifest)
    return manifest


# The first line of a Git LFS pointer: what a clone without `git lfs` leaves in place of a file.
_LFS_POINTER_START = b"version https://git-lfs.github.com/spec/"


def _check_model_file(path: Path, manifest: Manifest) -> None:
    """The model file must be the one the manifest was written for, and a whole .keras archive.

    Keras reports a truncated archive as "File not found", so the reason is found out here.
    """
    where = f"bundle {manifest.name} {manifest.version}: {path}"
    actual = sha256_file(path)
    size = path.stat().st_size
    damage = _archive_damage(path)
    if actual != manifest.model_sha256:
        mismatch = f"checksum mismatch: sha256 {actual}, the manifest says {manifest.model_sha256}"
        with path.open("rb") as handle:
            lfs_pointer = handle.read(len(_LFS_POINTER_START)) == _LFS_POINTER_START
        if lfs_pointer:
            state = f"is a Git LFS pointer ({size} bytes), not the model: run `git lfs pull`"
        elif damage is not None:
            state = f"{damage} ({size} bytes); copy the bundle again"
        else:
            state = "was changed after the bundle was written"
        raise BundleError(f"{where} {state} ({mismatch})")
    if damage is not None:
        raise BundleError(
            f"{where} {damage} ({size} bytes), although its sha256 matches the manifest: the "
            "bundle was written from a damaged file"
        )


def _archive_damage(path: Path) -> str | None:
    """What is wrong with a .keras file as a zip archive ("is truncated: ..."); None if nothing."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()  # reads every member and checks its CRC
    except zipfile.BadZipFile:  # no end-of-archive record: the file stops short
        return "is truncated: its zip archive has no end"
    except (OSError, EOFError, ValueError, zlib.error) as error:  # damage the CRC check misses
        return f"is damaged: its zip archive does not read ({error})"
    return None if broken is None else f"is damaged: archive member {broken!r} fails its CRC check"


_GENDER_SPEC = OutputSpec(kind="probabilities", labels=list(GENDER_LABELS))


def _expected_outputs(manifest: Manifest) -> dict[str, OutputSpec]:
    """The heads a model of this name must have, and the optional heads it has, as they must be.

    Either model may carry the other's heads (`gender`, `age_logits`) as auxiliary outputs; the
    registry averages all heads of a kind.
    """
    logits = manifest.outputs.get("age_logits")
    ages = len(logits.labels) if logits is not None else 0
    age_logits = OutputSpec(kind="logits", labels=[str(age) for age in range(ages)])
    if manifest.name == CLASSIFIER_NAME:
        required = {
            "age_bucket": OutputSpec(kind="probabilities", labels=list(AGE_BUCKET_LABELS)),
            "gender": _GENDER_SPEC,
        }
        optional = {"age_logits": age_logits}
    else:
        required, optional = {"age_logits": age_logits}, {"gender": _GENDER_SPEC}
    present = {name: spec for name, spec in optional.items() if name in manifest.outputs}
    return required | present


def check_contract(manifest: Manifest) -> None:
    """Check that a manifest promises what the service needs from a model of its name."""
    where = f"{manifest.name} {manifest.version}"
    expected_task = EXPECTED_TASKS.get(manifest.name)
    if expected_task is None:
        raise BundleError(f"{where}: unexpected model name; expected {', '.join(REQUIRED_MODELS)}")
    if manifest.task != expected_task:
        raise BundleError(f"{where}: task is {manifest.task!r}, expected {expected_task!r}")
    for output_name, expected in _expected_outputs(manifest).items():
        actual = manifest.outputs.get(output_name)
        if actual is None:
            raise BundleError(
                f"{where}: manifest has no output {output_name!r} "
                f"(outputs: {', '.join(manifest.outputs) or 'none'})"
            )
        if actual != expected:
            raise BundleError(
                f"{where}: output {output_name!r} should be {expected.kind} over labels "
                f"{_short(expected.labels)}, the manifest says {actual.kind} over "
                f"{_short(actual.labels)}"
            )
    if "age_logits" in manifest.outputs:
        if len(manifest.outputs["age_logits"].labels) < 2:
            raise BundleError(f"{where}: age_logits needs at least two ages")
        if manifest.calibration is None:
            raise BundleError(
                f"{where}: an age_logits head needs a calibration (temperature, level)"
            )


def _short(labels: list[str]) -> str:
    if len(labels) <= 6:
        return repr(labels)
    return f"[{labels[0]!r}, {labels[1]!r}, ..., {labels[-1]!r}] ({len(labels)} labels)"
