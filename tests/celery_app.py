"""The test suite's Celery app, as a shop's ``celery.py`` would be (tests/test_queues.py)."""

from __future__ import annotations

import os

from celery import Celery

from django_conversions.contrib.celery_schedule import beat_schedule

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.imports = ("django_conversions.contrib.celery",)
# A worker started with -B runs the sweep this often (seconds), when the test asks for it.
if os.environ.get("CONVERSIONS_TEST_SWEEP_EVERY"):
    app.conf.beat_schedule = beat_schedule(every=float(os.environ["CONVERSIONS_TEST_SWEEP_EVERY"]))
