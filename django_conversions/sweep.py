"""The sweep: reconcile lost outbox writes, rebuild events still marked to be rebuilt from
their committed order, deliver everything due, schedule the retries.

One pass of it is what ``manage.py conversions_deliver`` runs on each poll and what a
scheduler (Celery beat, cron) calls. It needs no queue: whatever a task never delivered (a
lost message, a killed worker whose lease ran out, no task backend at all) is due here.
"""

from __future__ import annotations

from django_conversions.delivery import DeliveryReport, deliver_due
from django_conversions.delivery.sender import StopCheck
from django_conversions.outbox import reconcile
from django_conversions.refresh import refresh_marked
from django_conversions.tasks import schedule_retries


def sweep(
    *,
    reconciling: bool = True,
    max_events: int | None = None,
    should_stop: StopCheck | None = None,
) -> tuple[int, DeliveryReport]:
    """One pass; returns (conversions recorded by reconciling, what delivery did)."""
    recorded = reconcile() if reconciling else 0
    refresh_marked()  # what the delivery after commit never did (no task backend, a restart)
    report = deliver_due(max_events=max_events, should_stop=should_stop)
    schedule_retries(report.retry_at)
    return recorded, report
