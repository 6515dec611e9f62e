"""The README's configuration table lists every setting, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from qhook.settings import Settings

README = Path(__file__).parents[2] / "README.md"
ROW = re.compile(r"^\| `(QHOOK_[A-Z0-9_]+)` \|", re.M)


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_setting_is_in_the_configuration_table() -> None:
    table = _section(README.read_text(encoding="utf-8"), "Configuration")
    listed = ROW.findall(table)
    expected = [f"QHOOK_{name.upper()}" for name in Settings.model_fields]
    missing = sorted(set(expected) - set(listed))
    assert not missing, f"add these to the README's configuration table: {missing}"
    unknown = sorted(set(listed) - set(expected))
    assert not unknown, f"the README lists settings that do not exist: {unknown}"
    assert len(listed) == len(set(listed)), "a setting is listed twice"


def test_the_two_commands_and_the_tour_are_there() -> None:
    text = README.read_text(encoding="utf-8")
    for needle in (
        "make run",
        "make test",
        "qhook demo",
        "qhook serve --no-worker",
        "qhook worker",
        "qhook migrate",
    ):
        assert needle in text, needle
