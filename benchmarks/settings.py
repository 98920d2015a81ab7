"""Settings for the benchmarks: the test app's order model on a SQLite file (or PostgreSQL with
BENCH_DB=postgres), no task backend (the outbox write alone is measured in the save path)."""

from __future__ import annotations

import atexit
import os
import tempfile

from tests.settings import *  # noqa: F403

if os.environ.get("BENCH_DB") != "postgres":
    _FILE = os.path.join(tempfile.gettempdir(), f"django_conversions_bench_{os.getpid()}.sqlite3")
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _FILE}}

    @atexit.register
    def _remove_database() -> None:  # tens of MB per run, of no use afterwards
        for path in (_FILE, _FILE + "-journal"):
            if os.path.exists(path):
                os.remove(path)


CONVERSIONS = {
    **CONVERSIONS,  # noqa: F405
    "TASK_BACKEND": None,
    "RETRY_JITTER": 0,
}
