"""The documentation keeps up with the code."""

from __future__ import annotations

from pathlib import Path

from django_conversions.conf import DEFAULTS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_reference():
    text = README.read_text()
    reference = text[text.index("## Settings reference") :]
    missing = [name for name in DEFAULTS if f"`{name}`" not in reference]
    assert missing == []


def test_the_readme_starts_with_the_two_commands():
    head = README.read_text()[:400]
    assert "make demo" in head and "make test" in head
