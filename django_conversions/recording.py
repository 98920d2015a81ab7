"""Recording one conversion: its outbox rows, one per site, written in a savepoint.

The entry points are in ``django_conversions.outbox`` (``track``, ``track_order``,
``reconcile``); this module holds what they share: the dedup keys, the savepoint, the rows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, IntegrityError, connections, models, router, transaction
from django.utils import timezone

from django_conversions.adapters import OrderAdapter
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.dispatch import event_queued
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.sites import checking_provider, sites_taking
from django_conversions.snapshots import BUILD_FAILED_PREFIX, error_text, verdict
from django_conversions.tasks import enqueue_delivery

logger = logging.getLogger("django_conversions")

T = TypeVar("T")


def dedup_key_for(conversion: Conversion, source: models.Model | None) -> str:
    """One event per order per site: keyed by order id, else by the source object."""
    if conversion.order_id:
        return order_key(conversion.event_name, conversion.order_id)
    return source_key(conversion.event_name, source) or (
        f"{conversion.event_name}:event:{uuid.uuid4()}"
    )


def order_key(event_name: str, order_id: str) -> str:
    return f"{event_name}:order:{order_id}"[:255]


def source_key(event_name: str, source: models.Model | None) -> str | None:
    """The key of an event known only by the object that caused it (also a failed build's
    when the order id can't be read)."""
    if source is None or source.pk is None:
        return None
    return f"{event_name}:{source._meta.label_lower}:{source.pk}"[:255]


def sites_for(
    event_name: str,
    sites: Iterable[TrackingSite | int] | None = None,
    *,
    using: str | None = None,
) -> list[TrackingSite]:
    """Active sites whose filter and provider take ``event_name`` (``sites``: a subset)."""
    taking = sites_taking(using or router.db_for_write(ConversionEvent), event_name)
    if sites is None:
        return list(taking)
    wanted = {s.pk if isinstance(s, TrackingSite) else int(s) for s in sites}
    return [site for site in taking if site.pk in wanted]


def in_savepoint(using: str, record: Callable[[], T]) -> T:
    """Run ``record`` in a savepoint (a transaction of its own in autocommit mode).

    A failure undoes its writes alone: the caller's transaction stays usable. Where the database
    itself gave up the whole transaction (SQLite on a full disk), Django can't roll back to the
    savepoint and marks the caller's block for rollback: all of it rolls back, none of it is
    committed piecemeal. A unique-constraint clash means a concurrent save recorded the same
    conversion first: ``record`` runs again and finds that save's events.
    """
    for attempt in (1, 2):
        try:
            with transaction.atomic(using=using):
                return record()
        except IntegrityError:
            if attempt == 2:
                raise
            logger.info("A concurrent save recorded this conversion first; reading its events")
    raise AssertionError("unreachable")


@dataclass
class Recorded:
    """A conversion's events, one per target site, and those this call wrote."""

    events: list[ConversionEvent]
    written: list[ConversionEvent] = field(default_factory=list)


def record(
    conversion: Conversion,
    source: models.Model | None,
    sites: Iterable[TrackingSite | int] | None,
    dedup_key: str | None,
    using: str,
    *,
    rebuild_later: bool = False,
) -> Recorded:
    """``rebuild_later``: mark the new events to be rebuilt from ``source`` before sending
    (``django_conversions.refresh``)."""
    conversion.check_time()  # a time no provider attributes is the caller's error, not an event
    key = dedup_key or dedup_key_for(conversion, source)
    targets = sites_for(conversion.event_name, sites, using=using)
    if not targets:
        return Recorded([])
    source_fields = source_fields_of(source, using)
    existing = _existing_events(key, targets, using)
    _attach_source(existing.values(), source_fields, using)
    now = timezone.now()
    new = [
        _new_event(conversion, site, key, source_fields, now, using)
        for site in targets
        if site.pk not in existing
    ]
    for event in new:
        event.rebuild_before_send = rebuild_later
    rebuilt = [
        _rebuild(event, conversion, key, using)
        for event in existing.values()
        if event.status == EventStatus.FAILED and event.last_error.startswith(BUILD_FAILED_PREFIX)
    ]
    _insert(new, using)
    written = [*rebuilt, *new]
    if written:
        _after_commit(written, using)
    by_site = {**existing, **{event.site_id: event for event in new}}
    return Recorded([by_site[site.pk] for site in targets], written)


def _existing_events(
    key: str, targets: list[TrackingSite], using: str
) -> dict[int, ConversionEvent]:
    """This conversion's events already in the outbox, by site (the unique dedup index)."""
    by_pk = {site.pk: site for site in targets}
    found = (
        ConversionEvent.objects.using(using)
        .filter(site__in=list(by_pk), dedup_key=key)
        .order_by()  # not the model's newest-first: that would walk the created_at index
    )
    events = {}
    for event in found:
        event.site = by_pk[event.site_id]  # the site in hand, not another query
        events[event.site_id] = event
    return events


def _attach_source(
    events: Iterable[ConversionEvent], source_fields: dict[str, Any], using: str
) -> None:
    """Link events recorded without their source (through the REST API, say) to it, so the
    admin, forget and reconciliation find them by their order."""
    unlinked = [event for event in events if event.source_content_type_id is None]
    if not source_fields or not unlinked:
        return
    ConversionEvent.objects.using(using).filter(pk__in=[event.pk for event in unlinked]).update(
        **source_fields
    )
    for event in unlinked:
        for name, value in source_fields.items():
            setattr(event, name, value)


def _insert(events: list[ConversionEvent], using: str) -> None:
    if not events:
        return
    connection = connections[using]
    fields = [f for f in ConversionEvent._meta.concrete_fields if not f.primary_key]
    batch_size = max(1, connection.ops.bulk_batch_size(fields, events))
    ConversionEvent.objects.using(using).bulk_create(events, batch_size=batch_size)
    if not connection.features.can_return_rows_from_bulk_insert:
        # The database doesn't return the new rows' keys: read them back by event id.
        pks = dict(
            ConversionEvent.objects.using(using)
            .filter(event_id__in=[event.event_id for event in events])
            .values_list("event_id", "pk")
        )
        for event in events:
            event.pk = pks[event.event_id]


def record_order(
    adapter: OrderAdapter, order: models.Model, using: str, *, rebuild_later: bool = False
) -> Recorded:
    try:
        conversion = adapter.to_conversion(order)
        conversion.check_time()
    except DatabaseError:
        raise  # the database failed, not the order: the savepoint is undone, nothing is kept
    except Exception as err:
        logger.warning(
            "The order adapter could not build a conversion for %s pk=%s: %s",
            order._meta.label,
            order.pk,
            type(err).__name__,
        )
        return _record_build_failure(adapter, order, err, using)
    return record(conversion, order, None, None, using, rebuild_later=rebuild_later)


def _record_build_failure(
    adapter: OrderAdapter, source: models.Model, error: BaseException, using: str
) -> Recorded:
    """Keep a failed event with the reason, so the admin shows why the order was not sent.

    Saving the order again once the cause is fixed turns these rows into real events: they
    carry the dedup key the order's events will have, so that save finds them.
    """
    event_name = conversions_settings.ORDER_EVENT_NAME
    key, order_id = _failure_key(adapter, source, event_name)
    targets = sites_for(event_name, using=using)
    existing = _existing_events(key, targets, using)
    source_fields = source_fields_of(source, using)
    rows = [
        ConversionEvent(
            site=site,
            event_name=event_name,
            dedup_key=key,
            order_reference=order_id or str(source.pk),
            status=EventStatus.FAILED,
            last_error=BUILD_FAILED_PREFIX + error_text(error),
            snapshot={},
            **source_fields,
        )
        for site in targets
        if site.pk not in existing
    ]
    _insert(rows, using)
    by_site = {**existing, **{event.site_id: event for event in rows}}
    return Recorded([by_site[site.pk] for site in targets], rows)


def _failure_key(
    adapter: OrderAdapter, order: models.Model, event_name: str
) -> tuple[str, str | None]:
    """The dedup key of the order's events, as far as the adapter can still read it: its
    event name and order id (the build failed elsewhere, nearly always), else the order row;
    and the order id (the order's number, shown in the admin), when it could be read."""
    try:
        order_id = adapter.get_order_id(order)
        event_name = adapter.get_event_name(order) or event_name
    except Exception:
        order_id = None
    if order_id:
        return order_key(event_name, order_id), order_id[:128]
    key = source_key(event_name, order)
    assert key is not None
    return key, None


def source_fields_of(source: models.Model | None, using: str) -> dict[str, Any]:
    if source is None or source.pk is None:
        return {}
    types = ContentType.objects.db_manager(using)
    return {
        "source_content_type": types.get_for_model(source, for_concrete_model=False),
        "source_object_id": str(source.pk),
    }


def _new_event(
    conversion: Conversion,
    site: TrackingSite,
    key: str,
    source_fields: dict[str, Any],
    now: datetime,
    using: str,
) -> ConversionEvent:
    return ConversionEvent(
        site=site,
        event_name=conversion.event_name,
        dedup_key=key,
        order_reference=conversion.order_id or "",
        created_at=now,
        next_attempt_at=now,
        **source_fields,
        **verdict(conversion, checking_provider(using, site)),
    )


def _rebuild(
    event: ConversionEvent, conversion: Conversion, key: str, using: str
) -> ConversionEvent:
    """Turn an earlier "could not build" row of this order into a real event."""
    for name, value in verdict(conversion, event.site.provider_instance()).items():
        setattr(event, name, value)
    event.dedup_key = key
    event.order_reference = conversion.order_id or event.order_reference
    event.attempts = 0
    event.save(using=using)
    return event


def _after_commit(events: list[ConversionEvent], using: str) -> None:
    # Marked events go to delivery too, skipped ones included: it rebuilds them from the
    # committed order first, and sends those that turned out eligible.
    pending = [e.pk for e in events if e.status == EventStatus.PENDING or e.rebuild_before_send]
    marked = [e.pk for e in events if e.rebuild_before_send]

    def enqueue_and_notify() -> None:
        try:
            if pending:
                enqueue_delivery(pending, rebuild_ids=marked)
        except Exception:
            # The sweep (conversions_deliver) delivers whatever this failed to start.
            logger.exception("Could not start delivery after commit")
        try:
            event_queued.send(sender=ConversionEvent, events=events)
        except Exception:
            logger.exception("A receiver of event_queued failed")

    transaction.on_commit(enqueue_and_notify, using=using)
