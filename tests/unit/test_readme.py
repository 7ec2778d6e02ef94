"""The README documents every setting, and nothing that is no longer a setting."""

from __future__ import annotations

import re
from pathlib import Path

from herald.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"`(HERALD_[A-Z0-9_]+)`", README))
    settings = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README"
    assert documented - settings == set(), "the README documents settings that do not exist"
