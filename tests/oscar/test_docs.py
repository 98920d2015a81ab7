"""The Oscar tests run the settings docs/oscar.md tells a shop to write, and nothing more of
ours: its Install block, run as Python, is contained in tests/oscar/settings.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "oscar.md"


def documented_settings() -> dict[str, Any]:
    text = DOC.read_text()
    install = text[text.index("## Install") : text.index("## When an order is reported")]
    [block] = re.findall(r"```python\n(.*?)```", install, re.DOTALL)
    namespace: dict[str, Any] = {"env": lambda name: "from-the-environment"}
    exec(block, namespace)  # the doc's lists hold `...` where the shop's own entries go
    return namespace


def listed(values: list[Any]) -> list[str]:
    return [value for value in values if value is not Ellipsis]


def test_the_documented_apps_and_middleware_are_the_tests_own():
    documented = documented_settings()

    assert set(listed(documented["INSTALLED_APPS"])) <= set(settings.INSTALLED_APPS)
    middleware = listed(documented["MIDDLEWARE"])
    assert [m for m in settings.MIDDLEWARE if m in middleware] == middleware  # same order


def test_the_documented_conversions_settings_are_the_tests_own():
    documented = documented_settings()["CONVERSIONS"]

    assert "ORDER_MODEL" not in documented and "ORDER_MODEL" not in settings.CONVERSIONS
    assert documented["ORDER_ADAPTER"] == settings.CONVERSIONS["ORDER_ADAPTER"]
    # besides the key, the tests add only what tests need (no jitter, delivery in the request)
    extra = set(settings.CONVERSIONS) - set(documented)
    assert extra == {"RETRY_JITTER", "BACKGROUND_DELIVERY"}
