"""Public signals, and connecting the receiver that turns a saved order into outbox rows.

Signals the host can receive (each sent after the database change is committed):

``event_queued(sender=ConversionEvent, events=[...])``
    New events were written to the outbox (pending or skipped).
``event_delivered(sender=ConversionEvent, event=...)``
    The provider accepted an event.
``event_failed(sender=ConversionEvent, event=..., reason=...)``
    An event failed for good (a permanent error, or retries ran out).
"""

from __future__ import annotations

from django.db import models
from django.dispatch import Signal

event_queued = Signal()
event_delivered = Signal()
event_failed = Signal()

_DISPATCH_UID = "django_conversions.order_saved"


def connect_order_model(model: type[models.Model]) -> None:
    # The receiver lives with track_order (the outbox module imports this one's signals).
    from django_conversions.outbox import order_saved

    models.signals.post_save.connect(order_saved, sender=model, dispatch_uid=_DISPATCH_UID)


def disconnect_order_model(model: type[models.Model]) -> None:
    models.signals.post_save.disconnect(sender=model, dispatch_uid=_DISPATCH_UID)
