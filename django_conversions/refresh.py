"""Refreshing an order's unsent events once the order has changed under them.

The outbox writes an order's events in the order's own transaction (nothing is lost if the
process dies after the commit), so they are built from the order as it is at that save. Two
things can change it before anything is sent:

* **Lines written after the order's save, in the same transaction** (a checkout that takes
  payment first saves the order paid, then creates its lines). Events written inside a
  transaction are marked ``rebuild_before_send``; when the transaction commits they are
  rebuilt from the committed order (``RefreshOnCommit``). If the process dies between the
  commit and the refresh, the mark stays, and the worker rebuilds the event before it sends it
  (``delivery.sender``): no event goes out built from the order before its lines.
* **The order attributed to its visit afterwards** (``attribution.attribute_order``): its
  unsent events are marked and refreshed the same way.

Only unsent events change: a pending one gets the rebuilt conversion and is judged again by its
provider; a skipped one is judged again when it was skipped for what its conversion lacked
(never one a person skipped: its stored conversion was eligible). Sent, failed and claimed
events are left as they are.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, router, transaction
from django.utils import timezone

from django_conversions.adapters import get_adapter
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.snapshots import verdict
from django_conversions.tasks import enqueue_delivery

logger = logging.getLogger("django_conversions")

__all__ = ["RefreshOnCommit", "mark_for_rebuild", "refresh_events"]

#: The events a refresh may change.
UNSENT = (EventStatus.PENDING, EventStatus.SKIPPED)


def _events_of(order: models.Model, using: str) -> models.QuerySet[ConversionEvent]:
    types = ContentType.objects.db_manager(using)
    return ConversionEvent.objects.using(using).filter(
        source_content_type=types.get_for_model(order, for_concrete_model=False),
        source_object_id=str(order.pk),
    )


def mark_for_rebuild(order: models.Model, using: str | None = None) -> int:
    """Mark the order's unsent events to be rebuilt before they are sent; returns how many."""
    using = using or router.db_for_write(ConversionEvent)
    return _events_of(order, using).filter(status__in=UNSENT).update(rebuild_before_send=True)


def refresh_events(order: models.Model, order_db: str | None = None) -> list[int]:
    """Rebuild the order's marked events from the order as its database holds it now.

    Returns the events this made pending that were skipped (to be queued for delivery). When
    the adapter can't build the conversion the marks stay: the worker tries again before
    sending and fails the event with the reason.
    """
    using = router.db_for_write(ConversionEvent)
    marked = list(
        _events_of(order, using)
        .filter(rebuild_before_send=True, status__in=UNSENT)
        .select_related("site")
    )
    if not marked:
        return []
    order_db = order_db or router.db_for_read(type(order), instance=order)
    current = type(order)._default_manager.db_manager(order_db).filter(pk=order.pk).first()
    if current is None:  # deleted meanwhile: the events keep what they have
        _events_of(order, using).update(rebuild_before_send=False)
        return []
    try:
        conversion = get_adapter().to_conversion(current)
    except Exception:
        logger.warning(
            "Could not rebuild the conversion of %s pk=%s after its transaction; the worker "
            "tries again before sending",
            order._meta.label,
            order.pk,
            exc_info=True,
        )
        return []
    now = timezone.now()
    queued = []
    unchanged = []
    for event in marked:
        changes = _changes(event, conversion, now)
        if all(getattr(event, name) == value for name, value in changes.items()):
            unchanged.append(event.pk)  # the usual case: only the mark goes
            continue
        # Compare-and-set: an event a worker claimed meanwhile is the worker's to rebuild.
        written = (
            ConversionEvent.objects.using(using)
            .filter(pk=event.pk, status=event.status, rebuild_before_send=True)
            .update(**changes, rebuild_before_send=False, updated_at=now)
        )
        became_sendable = changes.get("status") == EventStatus.PENDING
        if written and event.status == EventStatus.SKIPPED and became_sendable:
            queued.append(event.pk)
    if unchanged:
        ConversionEvent.objects.using(using).filter(
            pk__in=unchanged, status__in=UNSENT, rebuild_before_send=True
        ).update(rebuild_before_send=False)
    return queued


def _changes(event: ConversionEvent, conversion: Conversion, now: Any) -> dict[str, Any]:
    provider = event.site.provider_instance()
    reference = {"order_reference": conversion.order_id or event.order_reference}
    if event.status == EventStatus.PENDING:
        return {**verdict(conversion, provider), **reference}
    if event.status == EventStatus.SKIPPED and _skipped_for_what_it_lacked(event):
        return {**verdict(conversion, provider), **reference, "next_attempt_at": now}
    return {}


def _skipped_for_what_it_lacked(event: ConversionEvent) -> bool:
    """Was this event skipped by its provider's rules (not by a person)?"""
    try:
        stored = Conversion.from_snapshot(event.snapshot)
    except Exception:
        return True
    return event.site.provider_instance().ineligible_reason(stored) is not None


class RefreshOnCommit:
    """Refresh an order's marked events when its transaction commits, and queue those that
    became sendable.

    Registered before the events are written, so it runs before the delivery those events
    queue after commit (``on_commit`` callbacks run in order); it reads nothing unless
    ``arm()`` was called (events were written).
    """

    def __init__(self, order: models.Model, order_db: str) -> None:
        self.order = order
        self.order_db = order_db
        self.armed = False
        transaction.on_commit(self._run, using=order_db, robust=True)

    def arm(self) -> None:
        self.armed = True

    def _run(self) -> None:
        if not self.armed:
            return
        try:
            queued = refresh_events(self.order, self.order_db)
            if queued:
                enqueue_delivery(queued)
        except Exception:
            # The marks stay: the worker rebuilds the events before sending them.
            logger.exception("Could not refresh the events of an order after its commit")
