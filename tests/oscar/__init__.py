"""Tests against a real django-oscar shop, under their own settings (tests/oscar/settings.py).

The main suite leaves this folder out (tests/conftest.py); run it on its own::

    python -m pytest tests/oscar --ds=tests.oscar.settings
"""

from __future__ import annotations

import os

import pytest

# Read from the environment (pytest-django's --ds sets it): importing the settings module
# imports this package first.
if os.environ.get("DJANGO_SETTINGS_MODULE") != "tests.oscar.settings":
    raise pytest.UsageError(
        "tests/oscar needs Oscar's apps: python -m pytest tests/oscar --ds=tests.oscar.settings"
    )
