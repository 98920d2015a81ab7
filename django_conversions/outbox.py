"""Writing conversions to the outbox: one ``ConversionEvent`` per matching site.

Rows are written in the caller's transaction (inside a savepoint, so a failure here never
poisons the host's transaction): a rolled-back order leaves no event, a committed one can't be
lost. Delivery is triggered only after commit. The unique (site, dedup_key) constraint makes a
second event for the same order and site impossible, also under concurrent saves.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, IntegrityError, models, router, transaction

from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.providers import registry
from django_conversions.signals import event_queued

logger = logging.getLogger("django_conversions")

BUILD_FAILED_PREFIX = "Could not build the conversion: "


def dedup_key_for(conversion: Conversion, source: models.Model | None) -> str:
    """One event per order per site: keyed by order id, else by the source object."""
    if conversion.order_id:
        return f"{conversion.event_name}:order:{conversion.order_id}"[:255]
    if source is not None and source.pk is not None:
        return f"{conversion.event_name}:{source._meta.label_lower}:{source.pk}"[:255]
    return f"{conversion.event_name}:event:{uuid.uuid4()}"


def sites_for(event_name: str, sites: Iterable[TrackingSite] | None = None) -> list[TrackingSite]:
    """Active sites whose filter and provider take ``event_name``."""
    if sites is None:
        sites = TrackingSite.objects.filter(is_active=True)
    chosen = []
    for site in sites:
        if not site.is_active or not site.accepts(event_name):
            continue
        if not registry.get_class(site.provider)().accepts_event(event_name):
            continue
        chosen.append(site)
    return chosen


def track(
    conversion: Conversion,
    source: models.Model | None = None,
    sites: Iterable[TrackingSite] | None = None,
    *,
    dedup_key: str | None = None,
    using: str | None = None,
) -> list[ConversionEvent]:
    """Record ``conversion`` for every active site that takes it; return the events.

    Call it inside the transaction that makes the conversion true (the order's save, the
    signup): the events commit or roll back with it, and delivery starts after commit. Repeated
    calls with the same order id (or ``dedup_key``) return the existing events instead of new
    ones. Ineligible conversions are stored as ``skipped`` with the reason; nothing is sent.
    """
    using = using or router.db_for_write(ConversionEvent)
    key = dedup_key or dedup_key_for(conversion, source)
    targets = sites_for(conversion.event_name, sites)
    if not targets:
        return []
    source_fields = _source_fields(source)
    with transaction.atomic(using=using):
        existing = {
            event.site_id: event
            for event in ConversionEvent.objects.using(using).filter(
                dedup_key=key, site__in=targets
            )
        }
        rebuilt = _replace_build_failures(conversion, key, source_fields, targets, existing, using)
        new = [
            _new_event(conversion, site, key, source_fields)
            for site in targets
            if site.pk not in existing
        ]
        created = _insert(new, using)
        if len(created) < len(new):  # a concurrent save won some rows: return its events
            lost = [row.site_id for row in new if row.site_id not in created]
            existing.update(
                (event.site_id, event)
                for event in ConversionEvent.objects.using(using).filter(
                    dedup_key=key, site__in=lost
                )
            )
    events = [existing.get(site.pk) or created.get(site.pk) for site in targets]
    fresh = list(created.values()) + rebuilt
    if fresh:
        _after_commit(fresh, using)
    return [event for event in events if event is not None]


def track_order(
    order: models.Model, *, created: bool, using: str | None = None
) -> list[ConversionEvent]:
    """Record the order's conversion if the adapter says this save is the moment."""
    from django_conversions.adapters import get_adapter

    adapter = get_adapter()
    if not adapter.should_track(order, created=created):
        return []
    try:
        conversion = adapter.to_conversion(order)
    except Exception as err:
        logger.warning(
            "The order adapter could not build a conversion for %s pk=%s: %s",
            order._meta.label,
            order.pk,
            type(err).__name__,
        )
        return record_build_failure(order, err, using=using)
    return track(conversion, source=order, using=using)


def record_build_failure(
    source: models.Model, error: BaseException, *, using: str | None = None
) -> list[ConversionEvent]:
    """Keep a failed event with the reason, so the admin shows why the order was not sent.

    Saving the order again once the cause is fixed replaces these rows with real events.
    """
    event_name = conversions_settings.ORDER_EVENT_NAME
    using = using or router.db_for_write(ConversionEvent)
    key = f"{event_name}:{source._meta.label_lower}:{source.pk}"
    reason = BUILD_FAILED_PREFIX + _error_text(error)
    source_fields = _source_fields(source)
    targets = sites_for(event_name)
    with transaction.atomic(using=using):
        known = set(
            ConversionEvent.objects.using(using)
            .filter(site__in=targets, **source_fields, event_name=event_name)
            .values_list("site_id", flat=True)
        )
        rows = [
            ConversionEvent(
                site=site,
                event_name=event_name,
                dedup_key=key,
                order_reference=str(source.pk),
                status=EventStatus.FAILED,
                last_error=reason,
                snapshot={},
                **source_fields,
            )
            for site in targets
            if site.pk not in known
        ]
        return list(_insert(rows, using).values())


def _error_text(error: BaseException) -> str:
    # The message of a malformed-order error names the field; keep it short and readable.
    text = str(error) or type(error).__name__
    return text[:400]


def _source_fields(source: models.Model | None) -> dict[str, Any]:
    if source is None or source.pk is None:
        return {}
    return {
        "source_content_type": ContentType.objects.get_for_model(source, for_concrete_model=False),
        "source_object_id": str(source.pk),
    }


def _new_event(
    conversion: Conversion, site: TrackingSite, key: str, source_fields: dict[str, Any]
) -> ConversionEvent:
    provider = registry.get_class(site.provider)()
    reason = provider.ineligible_reason(conversion)
    return ConversionEvent(
        site=site,
        event_name=conversion.event_name,
        dedup_key=key,
        order_reference=conversion.order_id or "",
        status=EventStatus.SKIPPED if reason else EventStatus.PENDING,
        last_error=reason or "",
        snapshot=provider.minimize(conversion).to_snapshot(),
        **source_fields,
    )


def _replace_build_failures(
    conversion: Conversion,
    key: str,
    source_fields: dict[str, Any],
    targets: Sequence[TrackingSite],
    existing: dict[int, ConversionEvent],
    using: str,
) -> list[ConversionEvent]:
    """Turn earlier "could not build" rows of this source into real events."""
    if not source_fields:
        return []
    failures = ConversionEvent.objects.using(using).filter(
        site__in=[s for s in targets if s.pk not in existing],
        event_name=conversion.event_name,
        status=EventStatus.FAILED,
        last_error__startswith=BUILD_FAILED_PREFIX,
        **source_fields,
    )
    rebuilt = []
    for event in failures:
        fresh = _new_event(conversion, event.site, key, source_fields)
        for name in ("dedup_key", "order_reference", "status", "last_error", "snapshot"):
            setattr(event, name, getattr(fresh, name))
        event.attempts = 0
        event.save(using=using)
        existing[event.site_id] = event
        rebuilt.append(event)
    return rebuilt


def _insert(rows: list[ConversionEvent], using: str) -> dict[int, ConversionEvent]:
    """Insert rows; a row that lost a race with a concurrent save yields the winner's row."""
    if not rows:
        return {}
    try:
        with transaction.atomic(using=using):
            ConversionEvent.objects.using(using).bulk_create(rows)
        return {row.site_id: row for row in rows}
    except IntegrityError:
        pass
    created: dict[int, ConversionEvent] = {}
    for row in rows:
        try:
            with transaction.atomic(using=using):
                row.save(using=using, force_insert=True)
            created[row.site_id] = row
        except IntegrityError:
            logger.info("Event %s for site %s already recorded", row.dedup_key, row.site_id)
    return created


def _after_commit(events: list[ConversionEvent], using: str) -> None:
    pending = [e.pk for e in events if e.status == EventStatus.PENDING]

    def notify_and_enqueue() -> None:
        event_queued.send(sender=ConversionEvent, events=events)
        if pending:
            from django_conversions.tasks import enqueue_delivery

            enqueue_delivery(pending)

    transaction.on_commit(_never_raise(notify_and_enqueue), using=using)


def _never_raise(func: Any) -> Any:
    def run() -> None:
        try:
            func()
        except (DatabaseError, Exception):
            # The sweep (conversions_deliver) delivers whatever this failed to start.
            logger.exception("Could not start delivery after commit")

    return run


def rebuild_snapshot(event: ConversionEvent) -> str | None:
    """Refresh an event's conversion from its order, if the order still exists.

    Used by "retry now": once the cause of a failure is fixed on the order (an email, an
    amount), the retry sends the fixed data. Returns an error text when the adapter fails.
    """
    from django_conversions.adapters import get_adapter
    from django_conversions.apps import order_model

    model = order_model()
    source = event.source if event.source_content_type_id else None
    if model is None or not isinstance(source, model):
        return None
    try:
        conversion = get_adapter().to_conversion(source)
    except Exception as err:
        return BUILD_FAILED_PREFIX + _error_text(err)
    event.snapshot = event.site.provider_instance().minimize(conversion).to_snapshot()
    event.order_reference = conversion.order_id or event.order_reference
    return None
