"""The README's promises that code can check: the set-up commands and the settings table."""

from __future__ import annotations

import re
from pathlib import Path

from facedemo.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
MAKEFILE = README.parent / "Makefile"


def test_readme_opens_with_the_two_setup_commands_and_make_has_them() -> None:
    first_block = README.read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make serve", "make test"]
    targets = re.findall(r"^([a-z-]+):", MAKEFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert {"serve", "test"} <= set(targets)


def test_settings_table_lists_exactly_the_settings() -> None:
    documented = set(re.findall(r"^\| `FACEDEMO_([A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert documented == fields
