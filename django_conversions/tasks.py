"""Django Tasks entry points: the fast path that starts delivery right after commit.

The outbox does not depend on them: whatever a task never runs (a lost enqueue, a dead
worker, no backend at all), ``manage.py conversions_deliver`` finds and sends.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django_conversions.compat import task, task_backends
from django_conversions.conf import conversions_settings

logger = logging.getLogger("django_conversions.tasks")


@task()
def deliver_task(event_ids: list[int] | None = None) -> dict[str, int]:
    """Deliver the given events (or everything due) and schedule the retries."""
    from django_conversions.delivery import deliver_due, deliver_events

    report = deliver_events(event_ids) if event_ids else deliver_due()
    schedule_retries(report.retry_at)
    return {
        "delivered": report.delivered,
        "retrying": report.retrying,
        "failed": report.failed,
        "skipped": report.skipped,
        "deferred": report.deferred,
    }


def _backend_alias() -> str | None:
    return conversions_settings.TASK_BACKEND


def enqueue_delivery(event_ids: Sequence[int], run_after: datetime | None = None) -> Any:
    """Enqueue delivery of ``event_ids``; with no TASK_BACKEND this does nothing."""
    alias = _backend_alias()
    if not alias:
        return None
    backend = task_backends[alias]
    configured = deliver_task.using(backend=alias)
    if run_after is not None:
        if not backend.supports_defer:
            return None  # the sweep retries it when it is due
        configured = configured.using(run_after=run_after)
    return configured.enqueue(list(event_ids))


def schedule_retries(retry_at: Sequence[tuple[int, datetime]]) -> None:
    """One deferred task per retry time, where the backend can defer; else the sweep does it."""
    alias = _backend_alias()
    if not alias or not retry_at or not task_backends[alias].supports_defer:
        return
    by_time: dict[datetime, list[int]] = {}
    for event_id, when in retry_at:
        by_time.setdefault(_whole_second_after(when), []).append(event_id)
    for when, ids in by_time.items():
        try:
            enqueue_delivery(ids, run_after=when)
        except Exception:
            logger.exception("Could not enqueue a retry; the sweep will pick it up")


def _whole_second_after(when: datetime) -> datetime:
    """``when`` rounded up to the second: retries due within one second share a task, and a
    task never runs before its events are due (it would find nothing and be spent)."""
    whole = when.replace(microsecond=0)
    return whole if whole == when else whole + timedelta(seconds=1)
