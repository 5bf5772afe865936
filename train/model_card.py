"""MODEL_CARD.md text, written from the same figures that go into the manifest."""

from __future__ import annotations

from typing import Any

RESPONSIBLE_USE = """## Responsible use
- Gender is a binary estimate of how a face *appears* (labels: male/female as annotated in
  UTKFace), not a person's gender identity.
- Ages are estimates from appearance, with noisy training labels. Use the figures for aggregate
  statistics (e.g. the age mix of an audience), never for decisions about an individual person
  (age verification, access, hiring, policing).
- Accuracy differs between groups (tables above). Check it on data like yours before relying on it.
- UTKFace is licensed for non-commercial research only; so are models trained on it.
"""


def _figure(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def metrics_table(report: dict[str, Any], columns: list[str]) -> str:
    """Markdown table: overall, then one row per group of each grouping."""
    lines = ["| group | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    rows = [("overall", report)]
    for grouping, groups in report.get("groups", {}).items():
        rows.extend((f"{grouping}: {name}", figures) for name, figures in groups.items())
    for name, figures in rows:
        cells = " | ".join(_figure(figures.get(column)) for column in columns)
        lines.append(f"| {name} | {figures['n']} | {cells} |")
    return "\n".join(lines)


def tempering_phrase(calibration: dict[str, Any]) -> str:
    """How the age head is tempered, in words, from the manifest's `calibration`
    (facedemo.age_distribution.head_temperatures)."""
    temperature, age_exponent = calibration["temperature"], calibration["age_exponent"]
    if age_exponent == 0.0:
        return f"temperature {temperature:.3f}, fitted on the calibration split"
    return (
        f"temperature {temperature:.3f} for a face it sees as 25, times ((1 + age) / 26) ** "
        f"{age_exponent:g} for one it sees as older or younger, fitted on the calibration split"
    )


def _extra_data(extra: dict[str, Any] | None) -> str:
    if not extra:
        return ""
    return (
        f"\nAlso in the training split (not in calibration or validation): {extra['name']}, "
        f"{extra['used']} faces ({extra['passed_filters']} photos passed the metadata filters, "
        f"{extra['no_face']} had no detectable face, {extra['undecodable']} could not be "
        f"decoded). Data checksum `{extra['checksum'][:16]}`.\n"
    )


def _teacher(config: dict[str, Any]) -> str:
    weight = config.get("distill_weight") or 0
    gender_share = config.get("teacher_gender_weight") or 0
    if not weight and not gender_share:
        return ""
    lessons = []
    if weight:
        lessons.append(
            "a head that exists only in training (not in this model) learnt dlib's ResNet face "
            f"descriptor of each training face (cosine loss, weight {weight})"
        )
    if gender_share:
        lessons.append(
            f"{gender_share:g} of each training face's gender target was the probability a "
            "logistic regression on the descriptors gave it, fitted without the face (5 folds)"
        )
    return (
        "\nDistilled from a face-recognition teacher: "
        + "; ".join(lessons)
        + ". dlib's CC0 weights come from the face-recognition-models package, trained on "
        "about 3 million faces of other data sets; the descriptors come from "
        "`python -m train.teacher` (train/teacher.py), run before this command.\n"
    )


def render(
    *,
    title: str,
    summary: str,
    manifest_fields: dict[str, Any],
    report: dict[str, Any],
    columns: list[str],
    weaknesses: list[str],
) -> str:
    """The whole card."""
    training = manifest_fields["training"]
    split = training["split"]
    data = training["data"]
    sizes = ", ".join(f"{name} {size}" for name, size in split["sizes"].items())
    weakness_lines = "\n".join(f"- {item}" for item in weaknesses)
    return f"""# {title} {manifest_fields["version"]}

{summary}

## Data
UTKFace aligned & cropped faces (folder `{data["folder"]}`): {data["files"]} files,
{data["unparseable"]} unparseable names skipped, {data["duplicates_dropped"]} byte-identical
duplicates dropped ({data["conflicting_duplicate_groups_dropped"]} duplicate groups with
disagreeing labels removed whole). Data checksum `{data["checksum"][:16]}`.

Split (seed {split["seed"]}, stratified by {split["stratified_by"]}): {sizes}. The calibration split
is used only for fitting calibration; the validation split only for the figures below.
{_extra_data(training.get("extra_training_data"))}
## Training
```
{training["command"]}
```
{training["epochs_run"]} epochs, {training["wall_time_minutes"]} minutes wall time on
{training["threads"]} CPU threads (TensorFlow {training["tensorflow"]}, Keras {training["keras"]}).
Input: {manifest_fields["input"]["height"]}x{manifest_fields["input"]["width"]} RGB.
Parameters: see manifest; about {manifest_fields["flops_per_face"] / 1e6:.0f} MFLOPs per face.
{_teacher(training["config"])}
## Validation figures
{metrics_table(report, columns)}

## Known weaknesses
{weakness_lines}

{RESPONSIBLE_USE}"""
