"""Settings for the benchmarks: the test app's order model, no task backend unless a scenario
sets README's defaults itself, and no ``TASKS`` setting (Django's default, as README installs).

The database comes from ``BENCH_DB``: ``postgres`` (the default: production's engine, the local
server the tests use) or ``sqlite`` (a file in a directory of the run's own). Either way
``benchmarks/run.py`` creates the run's databases and drops them at the end, so runs side by
side (or a test run) never share one.

Two aliases: ``default`` and ``backlog``. The claim scenario keeps a small backlog in one and a
large one in the other and times claims in both side by side; ``BenchRouter`` sends every
model to the alias the scenario names (``BenchRouter.alias``), so the app sees one database at
a time, as it requires.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tests.settings import *  # noqa: F403

BENCH_DB = os.environ.get("BENCH_DB", "postgres")
BACKLOG_ALIAS = "backlog"

if BENCH_DB == "postgres":
    _SERVER = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "test"),
        "USER": os.environ.get("PGUSER", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
    }
    DATABASES = {
        "default": {**_SERVER, "TEST": {"NAME": f"django_conversions_bench_{os.getpid()}"}},
        BACKLOG_ALIAS: {
            **_SERVER,
            "TEST": {"NAME": f"django_conversions_bench_{os.getpid()}_backlog"},
        },
    }
elif BENCH_DB == "sqlite":
    SCRATCH_DIR = tempfile.mkdtemp(prefix="django_conversions_bench_")
    atexit.register(shutil.rmtree, SCRATCH_DIR, ignore_errors=True)
    DATABASES = {}
    for _alias in ("default", BACKLOG_ALIAS):
        _file = os.path.join(SCRATCH_DIR, f"{_alias}.sqlite3")
        DATABASES[_alias] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _file,
            "TEST": {"NAME": _file},
        }
else:
    raise ImproperlyConfigured(f"BENCH_DB={BENCH_DB!r}: use 'postgres' (the default) or 'sqlite'.")


class BenchRouter:
    """Every model on ``BenchRouter.alias``: one database at a time for the whole app."""

    alias = "default"

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return BenchRouter.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return BenchRouter.alias

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True


DATABASE_ROUTERS = ["benchmarks.settings.BenchRouter"]

# README's install sets no TASKS: Django's default (ImmediateBackend) applies.
del TASKS  # noqa: F821

CONVERSIONS = {
    **CONVERSIONS,  # noqa: F405
    # The checkout scenarios measure the outbox write alone; the README-defaults scenario
    # overrides this with README's settings.
    "TASK_BACKEND": None,
    "RETRY_JITTER": 0,
}

#: What README's Install puts in CONVERSIONS, plus what lets sites point at the local server
#: (plain http on a loopback address), as the test settings allow it.
README_CONVERSIONS = {
    "ORDER_MODEL": CONVERSIONS["ORDER_MODEL"],
    "ENCRYPTION_KEYS": CONVERSIONS["ENCRYPTION_KEYS"],
    **{
        key: value
        for key, value in CONVERSIONS.items()
        if key in ("ALLOW_INSECURE_ENDPOINTS", "ALLOW_PRIVATE_ENDPOINTS")
    },
}
