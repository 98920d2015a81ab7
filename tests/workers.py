"""Start worker processes against the test database (for crash and concurrency tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def worker_env(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(ROOT)
    name = connection.settings_dict["NAME"]
    if connection.settings_dict["ENGINE"].endswith("sqlite3"):
        env["CONVERSIONS_TEST_SQLITE"] = name
    else:
        env["PGDATABASE"] = name
    env["CONVERSIONS_TEST_OVERRIDES"] = json.dumps(overrides or {})
    return env


def start_command(*args: str, overrides: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    """``manage.py <args>`` in a new process sharing the test database."""
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        env=worker_env(overrides),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_python(code: str, overrides: dict[str, Any] | None = None) -> subprocess.Popen[str]:
    """Run ``code`` after django.setup() in a new process sharing the test database."""
    prelude = "import django; django.setup()\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + code],
        env=worker_env(overrides),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
