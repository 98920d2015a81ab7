"""Settings for the benchmarks: the test app's order model, no task backend (the outbox write
alone is measured in the save path).

The database comes from ``BENCH_DB``: ``postgres`` (the default: production's engine, the local
server the tests use) or ``sqlite`` (a file in a directory of the run's own). Either way
``benchmarks/run.py`` creates a database for the run and drops it at the end, so runs side by
side (or a test run) never share one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from django.core.exceptions import ImproperlyConfigured

from tests.settings import *  # noqa: F403

BENCH_DB = os.environ.get("BENCH_DB", "postgres")

if BENCH_DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PGDATABASE", "test"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "TEST": {"NAME": f"django_conversions_bench_{os.getpid()}"},
        }
    }
elif BENCH_DB == "sqlite":
    SCRATCH_DIR = tempfile.mkdtemp(prefix="django_conversions_bench_")
    atexit.register(shutil.rmtree, SCRATCH_DIR, ignore_errors=True)
    _FILE = os.path.join(SCRATCH_DIR, "bench.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _FILE,
            "TEST": {"NAME": _FILE},
        }
    }
else:
    raise ImproperlyConfigured(f"BENCH_DB={BENCH_DB!r}: use 'postgres' (the default) or 'sqlite'.")

CONVERSIONS = {
    **CONVERSIONS,  # noqa: F405
    "TASK_BACKEND": None,
    "RETRY_JITTER": 0,
}
