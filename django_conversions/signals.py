"""Public signals, and the receiver that turns a saved order into outbox rows.

Signals the host can receive (each sent after the database change is committed):

``event_queued(sender=ConversionEvent, events=[...])``
    New events were written to the outbox (pending or skipped).
``event_delivered(sender=ConversionEvent, event=...)``
    The provider accepted an event.
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
    try:
        track_order(instance, created=created)
    except Exception:  # the host's save must succeed whatever happens here
        logger.exception(
            "Could not record the conversion for %s pk=%s; the sweep's reconciliation will "
            "record it if the order is committed",
            sender._meta.label,
            instance.pk,
        )


def connect_order_model(model: type[models.Model]) -> None:
    models.signals.post_save.connect(order_saved, sender=model, dispatch_uid=_DISPATCH_UID)


def disconnect_order_model(model: type[models.Model]) -> None:
    models.signals.post_save.disconnect(sender=model, dispatch_uid=_DISPATCH_UID)
