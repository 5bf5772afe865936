"""Settings: values from FACEDEMO_* variables, and what an invalid one is reported as."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from facedemo.config import Settings, describe_invalid_settings


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any FACEDEMO_* variable of the machine running the tests."""
    for name in ("MODEL_PINS", "PORT", "DEVICE", "API_KEYS", "MAX_QUEUE"):
        monkeypatch.delenv(f"FACEDEMO_{name}", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("value", "pins"),
    [
        ('{"age-regressor": "1.2.0"}', {"age-regressor": "1.2.0"}),
        ("{}", {}),
        ("", {}),  # set but empty, as `docker run -e FACEDEMO_MODEL_PINS=` leaves it
    ],
)
def test_model_pins_are_read_as_a_json_object(
    environment: pytest.MonkeyPatch, value: str, pins: dict[str, str]
) -> None:
    environment.setenv("FACEDEMO_MODEL_PINS", value)

    assert Settings().model_pins == pins


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "{bad",
            "FACEDEMO_MODEL_PINS: not JSON (Expecting property name enclosed in double quotes at "
            'character 2); expected an object such as {"age-regressor": "1.0.0"}',
        ),
        ('"1.0.0"', "FACEDEMO_MODEL_PINS: Input should be a valid dictionary"),
        (
            '{"age-regressor": 1}',
            "FACEDEMO_MODEL_PINS (at age-regressor): Input should be a valid string",
        ),
    ],
)
def test_bad_model_pins_are_a_validation_error_in_one_line(
    environment: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    # Bad JSON used to escape validation as pydantic-settings' SettingsError, with a traceback.
    environment.setenv("FACEDEMO_MODEL_PINS", value)

    with pytest.raises(ValidationError) as raised:
        Settings()

    assert describe_invalid_settings(raised.value) == [expected]


def test_each_invalid_variable_gets_one_line_without_its_value(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("FACEDEMO_PORT", "eighty")
    environment.setenv("FACEDEMO_MAX_QUEUE", "0")
    environment.setenv("FACEDEMO_DEVICE", "tpu")

    with pytest.raises(ValidationError) as raised:
        Settings()

    lines = describe_invalid_settings(raised.value)
    assert lines == [
        "FACEDEMO_PORT: Input should be a valid integer, unable to parse string as an integer",
        "FACEDEMO_DEVICE: Input should be 'auto', 'cpu' or 'gpu'",
        "FACEDEMO_MAX_QUEUE: Input should be greater than or equal to 1",
    ]
    assert not any("eighty" in line or "tpu" in line for line in lines)  # values are not echoed
