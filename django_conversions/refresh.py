"""Refreshing an order's unsent events once the order has changed under them.

The outbox writes an order's events in the order's own transaction (nothing is lost if the
process dies after the commit), so they are built from the order as it is at that save. Two
things can change it before anything is sent:

* **Lines written after the order's save, in the same transaction** (a checkout that takes
  payment first saves the order paid, then creates its lines). Events written inside a
  transaction are marked ``rebuild_before_send``.
* **The order attributed to its visit afterwards** (``attribution.attribute_order``): its
  unsent events are marked the same way.

Marked events are rebuilt from the committed order by delivery, never by the request that
saved the order (reading the order and its lines again there cost a checkout more than the
outbox write): the delivery started after commit rebuilds the events handed to it
(``refresh_marked(ids)``, one read of each order for all its sites' events), the sweep rebuilds
whatever is still marked (a process that ended first, no task backend), and the sender
rebuilds a marked event it is about to send. No event goes out built from the order before
its lines.

Only unsent events change: a pending one gets the rebuilt conversion and is judged again by its
provider; a skipped one is judged again when it was skipped for what its conversion lacked
(never one a person skipped: its stored conversion was eligible), and is sent when it became
eligible. Sent, failed and claimed events are left as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, router
from django.utils import timezone

from django_conversions.adapters import get_adapter
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.snapshots import verdict

logger = logging.getLogger("django_conversions")

__all__ = ["mark_for_rebuild", "refresh_marked"]

#: The events a refresh may change.
UNSENT = (EventStatus.PENDING, EventStatus.SKIPPED)
#: Most orders one ``refresh_marked()`` call rebuilds (the sweep's bounded work per pass).
REFRESH_BATCH = 500


def _events_of(model: type[models.Model], pk: Any, using: str) -> models.QuerySet[ConversionEvent]:
    types = ContentType.objects.db_manager(using)
    return ConversionEvent.objects.using(using).filter(
        source_content_type=types.get_for_model(model, for_concrete_model=False),
        source_object_id=str(pk),
    )


def mark_for_rebuild(order: models.Model, using: str | None = None) -> list[int]:
    """Mark the order's unsent events to be rebuilt before they are sent; returns their ids."""
    using = using or router.db_for_write(ConversionEvent)
    unsent = _events_of(type(order), order.pk, using).filter(status__in=UNSENT)
    ids = list(unsent.values_list("pk", flat=True))
    if ids:
        unsent.filter(pk__in=ids).update(rebuild_before_send=True)
    return ids


def refresh_marked(event_ids: Iterable[int] | None = None, *, limit: int = REFRESH_BATCH) -> int:
    """Rebuild marked events (of ``event_ids`` only, when given) from their committed orders,
    each order read once for all its events; returns how many orders were read.

    At most ``limit`` orders per call: what is left stays marked for the next call (the sweep
    runs one per pass; the sender rebuilds a marked event it is about to send).

    Without ``event_ids`` (the sweep), a pending event is taken only when it is due on a site
    that may send now: one on a paused or held site, or waiting for its retry, is rebuilt by
    the sender when it is sent, so such events (whose rebuild may keep failing) never fill the
    calls ahead of other orders.
    Every other event leaves the selection whatever its rebuild does: a skipped one is
    unmarked, a pending one is sent or failed by the delivery that follows the sweep's call.
    """
    using = router.db_for_write(ConversionEvent)
    marked = ConversionEvent.objects.using(using).filter(
        rebuild_before_send=True, status__in=UNSENT, source_content_type__isnull=False
    )
    if event_ids is not None:
        marked = marked.filter(pk__in=list(event_ids))
    else:
        now = timezone.now()
        sendable = TrackingSite.objects.using(using).sendable(now).values("pk")
        due_to_send = models.Q(site__in=sendable, next_attempt_at__lte=now)
        marked = marked.filter(models.Q(status=EventStatus.SKIPPED) | due_to_send)
    orders = (
        marked.order_by().values_list("source_content_type", "source_object_id").distinct()[:limit]
    )
    types = ContentType.objects.db_manager(using)
    done = 0
    for type_id, object_id in list(orders):
        model = types.get_for_id(type_id).model_class()
        try:
            if model is None:
                raise LookupError(f"content type {type_id} has no model")
            _refresh_order(model, object_id, using)
        except Exception:
            # The marks stay: the sender rebuilds the events before sending them, and fails
            # them with the reason if that fails too.
            logger.exception("Could not rebuild the events of order %s", object_id)
        done += 1
    return done


def _refresh_order(model: type[models.Model], pk: Any, using: str) -> None:
    """Rebuild one order's marked events from the order as its database holds it now."""
    events = _events_of(model, pk, using)
    marked = list(events.filter(rebuild_before_send=True, status__in=UNSENT).select_related("site"))
    if not marked:
        return
    current = model._default_manager.db_manager(router.db_for_read(model)).filter(pk=pk).first()
    if current is None:  # deleted meanwhile: the events keep what they have
        events.update(rebuild_before_send=False)
        return
    try:
        conversion = get_adapter().to_conversion(current)
    except Exception:
        # A pending event keeps its mark: the sender tries again and fails it with the reason.
        # A skipped one keeps its reason (it is never sent, so nothing else would unmark it).
        logger.warning(
            "Could not rebuild the conversion of %s pk=%s; its pending events are rebuilt "
            "again before sending",
            model._meta.label,
            pk,
            exc_info=True,
        )
        events.filter(rebuild_before_send=True, status=EventStatus.SKIPPED).update(
            rebuild_before_send=False
        )
        return
    now = timezone.now()
    unchanged = []
    for event in marked:
        changes = _changes(event, conversion, now)
        if all(getattr(event, name) == value for name, value in changes.items()):
            unchanged.append(event.pk)  # the usual case: only the mark goes
            continue
        # Compare-and-set: an event a worker claimed meanwhile is the worker's to rebuild.
        ConversionEvent.objects.using(using).filter(
            pk=event.pk, status=event.status, rebuild_before_send=True
        ).update(**changes, rebuild_before_send=False, updated_at=now)
    if unchanged:
        ConversionEvent.objects.using(using).filter(
            pk__in=unchanged, status__in=UNSENT, rebuild_before_send=True
        ).update(rebuild_before_send=False)


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
