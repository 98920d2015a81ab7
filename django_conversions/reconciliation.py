"""Finding and recording conversions whose outbox write was lost.

An order can commit without its events: in autocommit mode the outbox write runs after the
order's own commit, and it can fail (a locked or full database) or never run (the process died
in between). The sweep calls ``reconcile()`` (as ``outbox.reconcile``): the adapter's
``conversions_since()`` names the orders that should have conversions within the look-back
window, and those no event names as its source are recorded as their save would have.

Work per call is bounded whatever the window holds: each call examines the window's newest
orders (a loss just now is repaired by the next sweep) and one page of the older ones, the next
page on the next call, round and round. At most ``limit`` orders are recorded per call.
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

from django_conversions.adapters import get_adapter
from django_conversions.conf import conversions_settings
from django_conversions.models import ConversionEvent
from django_conversions.recording import in_savepoint, record_order, sites_for

logger = logging.getLogger("django_conversions")

# Orders examined per call, in each of the two parts (newest, and the page of older ones), for
# each order the call may record.
SCAN_PER_RECORDED = 10

T = TypeVar("T")

# Per database: the key after which the next call's page of older orders starts (None: the
# oldest). Kept by each process: a new one starts from the oldest.
_older_pages_from: dict[str, Any] = {}


def restart_pages() -> None:
    """Have the next call's page of older orders start from the oldest."""
    _older_pages_from.clear()


def reconcile(*, window: timedelta | None = None, limit: int = 500) -> int:
    """Record the conversions of orders that should have one but have no event.

    The orders are those the adapter's ``conversions_since()`` returns for the look-back
    ``window`` (default ``CONVERSIONS["RECONCILE_WINDOW"]``), never from before the first
    active site existed (adding a site does not send past orders). At most ``limit`` are
    recorded, each in a transaction of its own. Returns how many orders were recorded.
    """
    adapter = get_adapter()
    model = adapter.get_order_model()
    using = router.db_for_write(ConversionEvent)
    taking = sites_for(conversions_settings.ORDER_EVENT_NAME, using=using)
    if model is None or not taking or limit <= 0:
        return 0
    since = max(
        timezone.now() - (window or reconcile_window()),
        min(site.created_at for site in taking),
    )
    try:
        lost = unrecorded(adapter.conversions_since(since), model, using, limit)
    except Exception:
        # A broken override must not stop the sweep that calls this from delivering.
        logger.exception("Could not look for lost conversions (the adapter's conversions_since)")
        return 0
    recorded = 0
    for order in lost:
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


def unrecorded(
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
        has_event = models.Exists(recorded.filter(source_object_id=source_id))
        return _unrecorded_in_pages(orders, has_event, using, limit)
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


def _unrecorded_in_pages(
    orders: models.QuerySet[Any], has_event: models.Exists, using: str, limit: int
) -> list[Any]:
    """The newest orders' and one page of the older ones' without an event: each query reads
    a key range of at most ``limit * SCAN_PER_RECORDED`` orders, probing the events' (source
    type, source id) index for each."""
    scan = limit * SCAN_PER_RECORDED
    newest_from = _nth_key(orders.order_by("-pk"), scan)
    if newest_from is None:  # the window holds no more than one page: all of it
        return list(orders.filter(~has_event)[:limit])
    found = list(orders.filter(pk__gte=newest_from).filter(~has_event)[:limit])
    if len(found) == limit:
        return found
    older = orders.filter(pk__lt=newest_from)
    if (start := _older_pages_from.get(using)) is not None:
        older = older.filter(pk__gt=start)
    page_end = _nth_key(older.order_by("pk"), scan)
    page = older if page_end is None else older.filter(pk__lte=page_end)
    # The next call takes the next page, or starts again at the oldest after the last one.
    _older_pages_from[using] = page_end
    return found + list(page.filter(~has_event)[: limit - len(found)])


def _nth_key(orders: models.QuerySet[Any], n: int) -> Any:
    """The key of the ``n``-th of ``orders`` in their order, or None if there are fewer."""
    keys = list(orders.values_list("pk", flat=True)[n - 1 : n])
    return keys[0] if keys else None


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
