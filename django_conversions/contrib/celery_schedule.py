"""The Celery beat entry for the sweep, importable from a shop's ``celery.py`` before Django's
apps are loaded (``django_conversions.contrib.celery`` imports the models)."""

from __future__ import annotations

from typing import Any

SWEEP_TASK = "django_conversions.sweep"
#: The beat schedule's key for the sweep.
SWEEP_ENTRY = "django-conversions-sweep"


def beat_schedule(every: float = 60.0) -> dict[str, dict[str, Any]]:
    """The beat entry running the sweep every ``every`` seconds; a run not started within that
    time is dropped (the next one does its work)."""
    return {SWEEP_ENTRY: {"task": SWEEP_TASK, "schedule": every, "options": {"expires": every}}}
