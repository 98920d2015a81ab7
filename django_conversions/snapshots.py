"""An event's stored conversion: judged by its site's provider, rebuilt from its order.

The outbox keeps, per event, the conversion as its provider will receive it (the snapshot).
It is built when the event is recorded, and built again from the order when the order changed
after that: a "retry now" once the order is fixed (``actions``), an order whose lines were
written after its save in the same transaction, an order attributed to its visit later
(``refresh``), and a worker sending an event still marked ``rebuild_before_send``.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from django_conversions.adapters import get_adapter
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.providers.base import Provider

__all__ = ["BUILD_FAILED_PREFIX", "error_text", "order_of", "rebuild_snapshot", "verdict"]

BUILD_FAILED_PREFIX = "Could not build the conversion: "


def error_text(error: BaseException) -> str:
    """The message of a malformed-order error (it names the field), short and storable: it may
    quote the order's data, and a text column takes no NUL nor lone surrogate."""
    text = (str(error) or type(error).__name__)[:400].replace("\x00", "")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def verdict(conversion: Conversion, provider: Provider) -> dict[str, Any]:
    """Status, reason and stored snapshot of an event from the provider's view of the
    conversion."""
    reason = provider.ineligible_reason(conversion)
    return {
        "status": EventStatus.SKIPPED if reason else EventStatus.PENDING,
        "last_error": reason or "",
        "snapshot": provider.minimize(conversion).to_snapshot(),
    }


def order_of(event: ConversionEvent) -> models.Model | None:
    """The order the event was recorded from, if it still exists (None for ``track()``
    conversions of other objects)."""
    model = get_adapter().get_order_model()
    source = event.source if event.source_content_type_id else None
    return source if model is not None and isinstance(source, model) else None


def rebuild_snapshot(event: ConversionEvent) -> str | None:
    """Refresh an event's conversion from its order, if the order still exists.

    Once the cause of a failure is fixed on the order (an email, an amount), the next send
    carries the fixed data. Sets ``snapshot`` and ``order_reference`` on ``event`` (the caller
    writes them); returns an error text when the adapter fails.
    """
    order = order_of(event)
    if order is None:
        return None
    try:
        conversion = get_adapter().to_conversion(order)
    except Exception as err:
        return BUILD_FAILED_PREFIX + error_text(err)
    event.snapshot = event.site.provider_instance().minimize(conversion).to_snapshot()
    event.order_reference = conversion.order_id or event.order_reference
    return None
