"""Writing conversions to the outbox: one ``ConversionEvent`` per matching site.

Rows are written in the caller's transaction, inside a savepoint of their own: a rolled-back
order leaves no event, and a failed write is undone alone, so the caller's transaction goes on
(the order commits without its event, and the sweep's ``reconcile()`` records it later).
Delivery is triggered only after commit. The unique (site, dedup_key) constraint makes a second
event for the same order and site impossible, also under concurrent saves.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models, router

from django_conversions.adapters import OrderAdapter, get_adapter
from django_conversions.apps import order_model
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.reconciliation import reconcile
from django_conversions.recording import (
    BUILD_FAILED_PREFIX,
    dedup_key_for,
    error_text,
    in_savepoint,
    record,
    record_order,
    sites_for,
)
from django_conversions.sites import active_sites

__all__ = [
    "BUILD_FAILED_PREFIX",
    "dedup_key_for",
    "rebuild_snapshot",
    "reconcile",
    "sites_for",
    "track",
    "track_order",
]


def track(
    conversion: Conversion,
    source: models.Model | None = None,
    sites: Iterable[TrackingSite | int] | None = None,
    *,
    dedup_key: str | None = None,
    using: str | None = None,
) -> list[ConversionEvent]:
    """Record ``conversion`` for every active site that takes it; return the events.

    Call it inside the transaction that makes the conversion true (the order's save, the
    signup): the events commit or roll back with it, and delivery starts after commit. Repeated
    calls with the same order id (or ``dedup_key``) return the existing events instead of new
    ones. Ineligible conversions are stored as ``skipped`` with the reason; nothing is sent.
    ``sites`` limits the sites (objects or ids) among the active ones. A database error is
    raised, and leaves the caller's transaction usable.
    """
    using = using or router.db_for_write(ConversionEvent)
    return in_savepoint(using, lambda: record(conversion, source, sites, dedup_key, using)).events


def track_order(
    order: models.Model, *, created: bool, using: str | None = None
) -> list[ConversionEvent]:
    """Record the order's conversion if the adapter says this save is the moment."""
    using = using or router.db_for_write(ConversionEvent)
    if not active_sites(using):
        return []  # nothing to record: the order is not even read
    adapter = get_adapter()
    if _stock_should_track(adapter) and not adapter.should_track(order, created=created):
        return []  # the stock check reads one attribute: no savepoint for a save that isn't it

    def record_if_due() -> list[ConversionEvent]:
        # A host's should_track() may query: it runs in the savepoint too, so whatever it
        # reads or writes can't break the host's transaction.
        if not adapter.should_track(order, created=created):
            return []
        return record_order(adapter, order, using).events

    return in_savepoint(using, record_if_due)


def _stock_should_track(adapter: OrderAdapter) -> bool:
    return type(adapter).should_track is OrderAdapter.should_track


def rebuild_snapshot(event: ConversionEvent) -> str | None:
    """Refresh an event's conversion from its order, if the order still exists.

    Used by "retry now": once the cause of a failure is fixed on the order (an email, an
    amount), the retry sends the fixed data. Returns an error text when the adapter fails.
    """
    model = order_model()
    source = event.source if event.source_content_type_id else None
    if model is None or not isinstance(source, model):
        return None
    try:
        conversion = get_adapter().to_conversion(source)
    except Exception as err:
        return BUILD_FAILED_PREFIX + error_text(err)
    event.snapshot = event.site.provider_instance().minimize(conversion).to_snapshot()
    event.order_reference = conversion.order_id or event.order_reference
    return None
