"""Writing conversions to the outbox: one ``ConversionEvent`` per matching site.

Rows are written in the caller's transaction, inside a savepoint of their own: a rolled-back
order leaves no event, and a failed write is undone alone, so the caller's transaction goes on
(the order commits without its event, and the sweep's ``reconcile()`` records it later).
Delivery is triggered only after commit. The unique (site, dedup_key) constraint makes a second
event for the same order and site impossible, also under concurrent saves.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import timedelta
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from django.contrib.contenttypes.models import ContentType
from django.db import models, router
from django.db.models.functions import Cast
from django.utils import timezone

from django_conversions.adapters import OrderAdapter, get_adapter
from django_conversions.apps import order_model
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, TrackingSite
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

logger = logging.getLogger("django_conversions")

T = TypeVar("T")


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


# --- reconciliation: conversions whose outbox write was lost -----------------------------------


def reconcile(*, window: timedelta | None = None, limit: int = 500) -> int:
    """Record the conversions of orders that should have one but have no event.

    An order committed without its events (the outbox write failed after an autocommit save,
    or the process died between the two) is found here: the adapter's ``conversions_since()``
    names the orders that should have conversions within the look-back ``window`` (default
    ``CONVERSIONS["RECONCILE_WINDOW"]``), and at most ``limit`` of those with no event are
    recorded, each as its save would have, in a transaction of its own. Orders from before the
    first active site existed are left alone. Returns how many orders were recorded.
    """
    model = order_model()
    using = router.db_for_write(ConversionEvent)
    taking = sites_for(conversions_settings.ORDER_EVENT_NAME, using=using)
    if model is None or not taking or limit <= 0:
        return 0
    since = max(
        timezone.now() - (window or reconcile_window()),
        min(site.created_at for site in taking),
    )
    adapter = get_adapter()
    recorded = 0
    for order in _without_events(adapter.conversions_since(since), model, using, limit):
        try:
            written = in_savepoint(using, partial(record_order, adapter, order, using)).written
        except Exception:
            logger.exception(
                "Could not record the lost conversion of %s pk=%s", order._meta.label, order.pk
            )
            continue
        if written:
            recorded += 1
            logger.warning(
                "Recorded the conversion of %s pk=%s, which had no event: its outbox write "
                "was lost",
                order._meta.label,
                order.pk,
            )
    return recorded


def reconcile_window() -> timedelta:
    return timedelta(seconds=conversions_settings.RECONCILE_WINDOW)


def _without_events(
    orders: models.QuerySet[Any] | Iterable[Any],
    model: type[models.Model],
    using: str,
    limit: int,
) -> list[Any]:
    """Up to ``limit`` of ``orders`` that no event names as its source."""
    if isinstance(orders, models.QuerySet):
        model = orders.model
    content_type = ContentType.objects.db_manager(using).get_for_model(
        model, for_concrete_model=False
    )
    recorded = ConversionEvent.objects.using(using).filter(source_content_type=content_type)
    source_id = _source_id_of_outer_row(model)
    if isinstance(orders, models.QuerySet) and orders.db == using and source_id is not None:
        # One query, whose subquery probes the (source type, source id) index per order.
        missing = orders.filter(~models.Exists(recorded.filter(source_object_id=source_id)))
        return list(missing[:limit])
    found: list[Any] = []
    for chunk in _chunks(iter(orders), limit):
        ids = {str(order.pk) for order in chunk}
        known = set(
            recorded.filter(source_object_id__in=ids).values_list("source_object_id", flat=True)
        )
        found += [order for order in chunk if str(order.pk) not in known]
        if len(found) >= limit:
            break
    return found[:limit]


def _source_id_of_outer_row(model: type[models.Model]) -> Any:
    """The outer order's key as events store it (its text), where SQL writes it as ``str()``
    does: whole numbers and text. None for other keys (a UUID is stored without dashes on some
    databases); those orders are looked up by chunks."""
    if len(model._meta.pk_fields) != 1:
        return None
    [pk] = model._meta.pk_fields
    if isinstance(pk, models.IntegerField):
        return Cast(models.OuterRef("pk"), output_field=models.CharField())
    if isinstance(pk, (models.CharField, models.TextField)):
        return models.OuterRef("pk")
    return None


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk
