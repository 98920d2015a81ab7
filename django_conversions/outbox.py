"""Writing conversions to the outbox: one ``ConversionEvent`` per matching site.

Rows are written in the caller's transaction, inside a savepoint of their own: a rolled-back
order leaves no event, and a failed write is undone alone, so the caller's transaction goes on
(the order commits without its event, and the sweep's ``reconcile()`` records it later).
Delivery is triggered only after commit. The unique (site, dedup_key) constraint makes a second
event for the same order and site impossible, also under concurrent saves.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models, router, transaction

from django_conversions.adapters import OrderAdapter, get_adapter
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.reconciliation import reconcile
from django_conversions.recording import (
    Recorded,
    dedup_key_for,
    in_savepoint,
    record,
    record_order,
    sites_for,
)
from django_conversions.sites import active_sites
from django_conversions.snapshots import BUILD_FAILED_PREFIX, rebuild_snapshot

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
    order: models.Model,
    *,
    created: bool,
    using: str | None = None,
    order_db: str | None = None,
) -> list[ConversionEvent]:
    """Record the order's conversion if the adapter says this save is the moment.

    ``order_db`` is the order's database (``post_save``'s ``using``). Inside a transaction the
    order may still change before it commits (its lines written after it): the events are
    marked to be rebuilt from the committed order by delivery (``django_conversions.refresh``).
    """
    using = using or router.db_for_write(ConversionEvent)
    if not active_sites(using):
        return []  # nothing to record: the order is not even read
    adapter = get_adapter()
    if _stock_should_track(adapter) and not adapter.should_track(order, created=created):
        return []  # the stock check reads one attribute: no savepoint for a save that isn't it
    order_db = order_db or router.db_for_write(type(order), instance=order)
    # The order may still change before its transaction commits: delivery rebuilds the events
    # from the committed order (``django_conversions.refresh``), not this request.
    rebuild_later = transaction.get_connection(order_db).in_atomic_block

    def record_if_due() -> Recorded:
        # A host's should_track() may query: it runs in the savepoint too, so whatever it
        # reads or writes can't break the host's transaction.
        if not adapter.should_track(order, created=created):
            return Recorded([])
        return record_order(adapter, order, using, rebuild_later=rebuild_later)

    return in_savepoint(using, record_if_due).events


def _stock_should_track(adapter: OrderAdapter) -> bool:
    return type(adapter).should_track is OrderAdapter.should_track
