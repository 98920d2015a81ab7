"""Public signals, and the receiver that turns a saved order into outbox rows.

Signals the host can receive (each sent after the database change is committed):

``event_queued(sender=ConversionEvent, events=[...])``
    New events were written to the outbox (pending or skipped).
``event_delivered(sender=ConversionEvent, event=...)``
    The provider accepted an event. The event is as written: when its request delivered
    everything it carried, its snapshot holds the order's totals only (no customer data, see
    ``privacy.delivered_snapshot``); ``event.source`` is the order.
``event_failed(sender=ConversionEvent, event=..., reason=...)``
    An event failed for good (a permanent error, or retries ran out).

``request_answered(sender=TrackingSite, site=..., outcome=..., duration=..., events=...,
accepted=...)``
    A worker's request to a provider ended (sent by the worker, before recording; metrics).

The signal objects are defined in ``django_conversions.dispatch`` (which the outbox and
delivery import) and re-exported here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import models

from django_conversions.attribution import attach_current_visit, forget_attribution
from django_conversions.dispatch import (
    event_delivered,
    event_failed,
    event_queued,
    request_answered,
)
from django_conversions.outbox import track_order

__all__ = [
    "connect_order_model",
    "disconnect_order_model",
    "event_delivered",
    "event_failed",
    "event_queued",
    "order_deleted",
    "order_saved",
    "request_answered",
]

logger = logging.getLogger("django_conversions")

_DISPATCH_UID = "django_conversions.order_saved"


def order_saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """post_save receiver for ``CONVERSIONS["ORDER_MODEL"]``. Never raises into ``save()``.

    ``using`` is the order's database; the events go to the app's own (see ``track_order``).
    """
    if raw:  # loading fixtures is not a sale
        return
    if created:
        try:
            attach_current_visit(instance)
        except Exception:  # the order is saved and tracked without its visit
            logger.exception(
                "Could not attribute %s pk=%s to the visit it was created in",
                sender._meta.label,
                instance.pk,
            )
    try:
        track_order(instance, created=created, order_db=using)
    except Exception:  # the host's save must succeed whatever happens here
        logger.exception(
            "Could not record the conversion for %s pk=%s; the sweep's reconciliation will "
            "record it if the order is committed",
            sender._meta.label,
            instance.pk,
        )


def order_deleted(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """post_delete receiver: an order's attribution goes with it (its events stay, for the
    shop's accounts, until retention deletes them)."""
    try:
        forget_attribution(instance)
    except Exception:
        logger.exception(
            "Could not delete the attribution of %s pk=%s", sender._meta.label, instance.pk
        )


def connect_order_model(model: type[models.Model]) -> None:
    models.signals.post_save.connect(order_saved, sender=model, dispatch_uid=_DISPATCH_UID)
    models.signals.post_delete.connect(order_deleted, sender=model, dispatch_uid=_DISPATCH_UID)


def disconnect_order_model(model: type[models.Model]) -> None:
    models.signals.post_save.disconnect(sender=model, dispatch_uid=_DISPATCH_UID)
    models.signals.post_delete.disconnect(sender=model, dispatch_uid=_DISPATCH_UID)
