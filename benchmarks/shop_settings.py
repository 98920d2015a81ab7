"""The example shop's settings for ``benchmarks/shop_checkout.py``: the demo's, on the
benchmark run's database server (``BENCH_DB``, as ``benchmarks/settings.py`` picks it; a
database of the run's own, dropped at the end), with README's Install settings instead of the
demo's delivery setup (no ``TASKS``: Django's default, the immediate backend)."""

from __future__ import annotations

import os

from demo_site.settings import *  # noqa: F403

from benchmarks import settings as bench

DEBUG = False
ALLOWED_HOSTS = ["testserver"]  # Django's test client
# Named after the benchmark run that started this process, so its check finds it if left over.
_RUN = os.environ.get("CONVERSIONS_BENCH_RUN_PID", str(os.getpid()))
DATABASES = {"default": dict(bench.DATABASES["default"])}
if bench.BENCH_DB == "postgres":
    DATABASES["default"]["TEST"] = {"NAME": f"django_conversions_bench_{_RUN}_shop"}
del TASKS  # noqa: F821
CONVERSIONS = {
    key: value
    for key, value in CONVERSIONS.items()  # noqa: F405
    if key
    in ("ORDER_MODEL", "ENCRYPTION_KEYS", "ALLOW_INSECURE_ENDPOINTS", "ALLOW_PRIVATE_ENDPOINTS")
}
