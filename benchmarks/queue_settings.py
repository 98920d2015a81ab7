"""Settings for benchmarks/queues.py: the benchmark settings with RQ and Celery configured on the
local Redis (a database of the run's own), for the run and the workers it starts."""

from __future__ import annotations

import os
from importlib.util import find_spec

from benchmarks.settings import *  # noqa: F403

REDIS_URL = os.environ.setdefault(
    "CONVERSIONS_BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{os.getpid() % 15 + 1}"
)
BENCH_QUEUE = os.environ.setdefault("CONVERSIONS_BENCH_QUEUE", f"conversions-bench-{os.getpid()}")

if "django_rq" not in INSTALLED_APPS:  # noqa: F405
    INSTALLED_APPS = [*INSTALLED_APPS, "django_rq"]  # noqa: F405
RQ_QUEUES = {"default": {"URL": REDIS_URL}}
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_DEFAULT_QUEUE = BENCH_QUEUE
TASKS = {
    "default": {
        "BACKEND": ("django.tasks" if find_spec("django.tasks") else "django_tasks")
        + ".backends.immediate.ImmediateBackend"
    },
    "rq": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default"]},
    "celery": {
        "BACKEND": "django_conversions.contrib.celery.CeleryBackend",
        "OPTIONS": {"queue": BENCH_QUEUE},
    },
}
CONVERSIONS = {
    **CONVERSIONS,  # noqa: F405
    "TASK_BACKEND": os.environ.get("CONVERSIONS_BENCH_TASK_BACKEND") or None,
    # A killed worker's events come back within the run.
    "LEASE_SECONDS": 10,
    "REQUEST_DEADLINE": 5,
}
