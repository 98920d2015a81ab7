"""Celery: deliveries handed to Celery workers after commit, and the sweep on Celery beat.

``pip install "django-conversions[celery]"``, then, beside the shop's own Celery app::

    TASKS = {
        "default": {...},  # the shop's own, if any
        "conversions": {"BACKEND": "django_conversions.contrib.celery.CeleryBackend"},
    }
    CONVERSIONS = {"TASK_BACKEND": "conversions", ...}

    # the shop's celery.py
    from django_conversions.contrib.celery_schedule import beat_schedule
    app.conf.beat_schedule = {**app.conf.beat_schedule, **beat_schedule(every=60)}

``CeleryBackend`` is a Django Tasks backend: the app enqueues ``deliver_task`` after commit and
its retries with ``run_after`` as it does on any backend, and this sends them to Celery (a
retry as a message with an ``eta``). The worker runs them through ``run_task``; Celery beat
runs ``sweep_task``. The outbox stays the source of truth: a message lost, expired or never
sent (broker down) only delays its events until the next sweep, and a message delivered twice
finds its events delivered or held and sends nothing.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.utils import timezone
from django.utils.module_loading import import_string

from django_conversions.compat import BaseTaskBackend, TaskResult, TaskResultStatus
from django_conversions.contrib.celery_schedule import SWEEP_TASK
from django_conversions.sweep import sweep

RUN_TASK = "django_conversions.run_task"


@shared_task(name=RUN_TASK, ignore_result=True, acks_late=True)
def run_task(module_path: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Run a Django task (``django_conversions.tasks.deliver_task``) in a Celery worker.

    Acknowledged once it ran: a worker killed meanwhile leaves the message to the broker,
    which hands it out again; the events it named are then delivered or held, and nothing is
    sent twice because of it.
    """
    task = import_string(module_path)
    if not callable(getattr(task, "call", None)) or getattr(task, "module_path", None) != (
        module_path
    ):
        raise TypeError(f"{module_path} is not a Django task")
    task.call(*args, **kwargs)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep_task() -> dict[str, int]:
    """One pass of the sweep (``conversions_deliver`` without ``--loop``), for Celery beat."""
    recorded, report = sweep()
    return {"reconciled": recorded, **report.counts()}


class CeleryBackend(BaseTaskBackend):
    """A Django Tasks backend that sends each task to Celery (``run_task``).

    ``OPTIONS``: ``{"queue": "conversions"}`` routes the messages to that Celery queue (the
    worker then needs ``-Q conversions``); without it Celery's default queue is used.
    """

    supports_defer = True

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        options: dict[str, Any] = {}
        if self.options.get("queue"):
            options["queue"] = self.options["queue"]
        if task.run_after is not None:
            options["eta"] = task.run_after
        sent = run_task.apply_async(args=(task.module_path, list(args), dict(kwargs)), **options)
        return TaskResult(
            task=task,
            id=str(sent.id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
