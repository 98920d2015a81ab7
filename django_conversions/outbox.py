"""Writing conversions to the outbox: one ``ConversionEvent`` per matching site.

Rows are written in the caller's transaction, and a failure here never poisons it (see
``guarded``): a rolled-back order leaves no event, a committed one can't be lost. Delivery is
triggered only after commit. The unique (site, dedup_key) constraint makes a second event for
the same order and site impossible, also under concurrent saves.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, IntegrityError, connections, models, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from django_conversions import bulk
from django_conversions.adapters import OrderAdapter, get_adapter
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.providers.base import Provider
from django_conversions.signals import event_queued
from django_conversions.sites import checking_provider, host_provider_takes, sites_taking
from django_conversions.tasks import enqueue_delivery

logger = logging.getLogger("django_conversions")

BUILD_FAILED_PREFIX = "Could not build the conversion: "


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
    ``sites`` limits the sites (objects or ids) among the active ones.
    """
    using = using or router.db_for_write(ConversionEvent)
    return guarded(
        using,
        lambda: _track(conversion, source, sites, dedup_key, using),
        host_code=host_provider_takes(using, conversion.event_name),
    )


def guarded(
    using: str, record: Callable[[], list[ConversionEvent]], *, host_code: bool = False
) -> list[ConversionEvent]:
    """Run ``record`` so that a failure never poisons the caller's transaction.

    A unique-constraint clash means a concurrent save recorded the same order first: the
    failed write is undone and ``record`` runs again, now finding that save's events.
    ``host_code``: ``record`` runs code of the host's (its adapter, its providers' checks),
    which may write.
    """
    for attempt in (1, 2):
        try:
            with _guard(using, host_code):
                return record()
        except IntegrityError:
            if attempt == 2:
                raise
            logger.info("A concurrent save recorded this conversion first; reading its events")
    raise AssertionError("unreachable")


def _guard(using: str, host_code: bool) -> AbstractContextManager[object]:
    """A savepoint, unless the database keeps its transaction through a failed statement.

    PostgreSQL aborts the whole transaction on any error, so there the write runs in a
    savepoint. SQLite undoes only the failed statement: a savepoint (two more statements on
    every tracked save) protects nothing when all that runs is our own reads and at most one
    write, a single INSERT (``_track`` opens one around its rare writes of several rows).
    Code of the host's may write through the ORM, which flags the transaction as broken when
    a write fails: it keeps the savepoint, which clears that flag.
    """
    connection = connections[using]
    if (
        host_code
        or connection.vendor != "sqlite"
        or not connection.features.can_return_rows_from_bulk_insert  # else bulk_create()
    ):
        return transaction.atomic(using=using)
    return _unless_transaction_lost(connection)


@contextmanager
def _unless_transaction_lost(connection: BaseDatabaseWrapper) -> Iterator[None]:
    try:
        yield
    except DatabaseError:
        if connection.in_atomic_block and not connection.connection.in_transaction:
            # SQLite gave up the whole transaction (disk full, I/O error): have the caller's
            # atomic block roll back rather than commit what follows statement by statement,
            # as Django does when a savepoint can't be rolled back.
            connection.needs_rollback = True
        raise


def _track(
    conversion: Conversion,
    source: models.Model | None,
    sites: Iterable[TrackingSite | int] | None,
    dedup_key: str | None,
    using: str,
) -> list[ConversionEvent]:
    key = dedup_key or dedup_key_for(conversion, source)
    targets = sites_for(conversion.event_name, sites, using=using)
    if not targets:
        return []
    source_fields = _source_fields(source)
    now = timezone.now()  # one timestamp for the conversion's rows (prepared once for the insert)
    new = [_new_event(conversion, site, key, source_fields, now, using) for site in targets]
    inserted, existing = _insert_new(new, key, targets, using, now)
    failed_builds = [
        event
        for event in existing.values()
        if event.status == EventStatus.FAILED and event.last_error.startswith(BUILD_FAILED_PREFIX)
    ]
    fresh = inserted
    if failed_builds:
        # A rebuilt row is saved through the ORM, which flags the transaction on failure.
        with transaction.atomic(using=using):
            fresh = [*(_rebuild(event, conversion, key, using) for event in failed_builds), *fresh]
    if fresh:
        _after_commit(fresh, using)
    by_site = {**existing, **{event.site_id: event for event in inserted}}
    return [by_site[site.pk] for site in targets]


def _insert_new(
    new: list[ConversionEvent],
    key: str,
    targets: Sequence[TrackingSite],
    using: str,
    now: datetime,
) -> tuple[list[ConversionEvent], dict[int, ConversionEvent]]:
    """Insert the events of the sites that have none for ``key`` yet.

    Returns the inserted events and the other sites' existing ones, by site. Where the insert
    can skip rows that clash with the unique (dedup_key, site) constraint, a first save (nearly
    every one) is that one statement; the events already there are read only when some clashed.
    """
    if bulk.skips_conflicts(using):
        inserted = bulk.insert(new, using, match_pk_by="event_id", now=now, skip_conflicts=True)
        if len(inserted) == len(new):
            return inserted, {}
        taken = {event.site_id for event in inserted}
        clashed = [site for site in targets if site.pk not in taken]
        existing = _existing_events(using, {key}, clashed)
        if len(existing) < len(clashed):  # a clash with a row this transaction can't see
            raise IntegrityError("a concurrent save holds this conversion's dedup key")
        return inserted, existing
    existing = _existing_events(using, {key}, targets)
    unrecorded = [event for event in new if event.site_id not in existing]
    return bulk.insert(unrecorded, using, match_pk_by="event_id", now=now), existing


def _existing_events(
    using: str, keys: set[str], targets: Sequence[TrackingSite]
) -> dict[int, ConversionEvent]:
    """This conversion's events already in the outbox, by site.

    Asked on every tracked save and nearly always empty, so it is one small SQL statement on
    the unique (site, dedup_key) index; the rows are loaded only when some exist.
    """
    wanted = [site.pk for site in targets]
    sql = _existing_sql(using, len(wanted), len(keys))
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [*wanted, *keys])
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return {}
    events = ConversionEvent.objects.using(using).filter(pk__in=ids)
    return {event.site_id: event for event in events}


_existing_sql_cache: dict[tuple[str, int, int], str] = {}


def _existing_sql(using: str, sites: int, keys: int) -> str:
    """The lookup's SQL for this many sites and keys, written once (it runs on every save)."""
    cache_key = (using, sites, keys)
    if cache_key not in _existing_sql_cache:
        meta = ConversionEvent._meta
        quote = connections[using].ops.quote_name
        # Both columns of the unique (site, dedup_key) index, so the lookup is an index probe.
        _existing_sql_cache[cache_key] = (
            "SELECT {id} FROM {table} WHERE {site} IN ({sites}) AND {key} IN ({keys})".format(
                id=quote(meta.pk.column),
                table=quote(meta.db_table),
                site=quote(meta.get_field("site").column),
                sites=", ".join(["%s"] * sites),
                key=quote(meta.get_field("dedup_key").column),
                keys=", ".join(["%s"] * keys),
            )
        )
    return _existing_sql_cache[cache_key]


def order_saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """post_save receiver for ``CONVERSIONS["ORDER_MODEL"]``. Never raises into ``save()``."""
    if raw:  # loading fixtures is not a sale
        return
    try:
        track_order(instance, created=created, using=using)
    except Exception:  # the host's save must succeed whatever happens here
        logger.exception(
            "Could not record the conversion for %s pk=%s", sender._meta.label, instance.pk
        )


def track_order(
    order: models.Model, *, created: bool, using: str | None = None
) -> list[ConversionEvent]:
    """Record the order's conversion if the adapter says this save is the moment."""
    adapter = get_adapter()
    if not adapter.should_track(order, created=created):
        return []
    using = using or router.db_for_write(ConversionEvent)

    def record() -> list[ConversionEvent]:
        try:
            conversion = adapter.to_conversion(order)
        except Exception as err:
            logger.warning(
                "The order adapter could not build a conversion for %s pk=%s: %s",
                order._meta.label,
                order.pk,
                type(err).__name__,
            )
            return _record_build_failure(adapter, order, err, using)
        return _track(conversion, order, None, None, using)

    host_code = type(adapter) is not OrderAdapter or host_provider_takes(
        using, conversions_settings.ORDER_EVENT_NAME
    )
    return guarded(using, record, host_code=host_code)


def _record_build_failure(
    adapter: OrderAdapter, source: models.Model, error: BaseException, using: str
) -> list[ConversionEvent]:
    """Keep a failed event with the reason, so the admin shows why the order was not sent.

    Saving the order again once the cause is fixed turns these rows into real events: they
    carry the dedup key the order's events will have, so that save finds them.
    """
    event_name = conversions_settings.ORDER_EVENT_NAME
    key = _failure_key(adapter, source, event_name)
    source_fields = _source_fields(source)
    targets = sites_for(event_name, using=using)
    known = set(  # sites whose event for this order exists (the unique dedup index)
        ConversionEvent.objects.using(using)
        .filter(dedup_key=key, site__in=targets)
        .values_list("site_id", flat=True)
    )
    rows = [
        ConversionEvent(
            site=site,
            event_name=event_name,
            dedup_key=key,
            order_reference=str(source.pk),
            status=EventStatus.FAILED,
            last_error=BUILD_FAILED_PREFIX + _error_text(error),
            snapshot={},
            **source_fields,
        )
        for site in targets
        if site.pk not in known
    ]
    return bulk.insert(rows, using, match_pk_by="event_id")


def _failure_key(adapter: OrderAdapter, order: models.Model, event_name: str) -> str:
    """The dedup key of the order's events, as far as the adapter can still read it: its
    event name and order id (the build failed elsewhere, nearly always), else the order row."""
    try:
        order_id = adapter.get_order_id(order)
        event_name = adapter.get_event_name(order) or event_name
    except Exception:
        order_id = None
    if order_id:
        return order_key(event_name, order_id)
    key = source_key(event_name, order)
    assert key is not None
    return key


def _error_text(error: BaseException) -> str:
    # The message of a malformed-order error names the field; keep it short and readable.
    text = str(error) or type(error).__name__
    return text[:400]


def _source_fields(source: models.Model | None) -> dict[str, Any]:
    if source is None or source.pk is None:
        return {}
    types = ContentType.objects
    if source._state.db != types.db:  # db_manager() copies the manager: only when needed
        types = types.db_manager(source._state.db)
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
    content_type = source_fields.get("source_content_type")
    event = _built_event(
        site,
        content_type,
        {
            "site_id": site.pk,
            "event_name": conversion.event_name,
            "dedup_key": key,
            "order_reference": conversion.order_id or "",
            "created_at": now,
            "next_attempt_at": now,
            "source_content_type_id": content_type.pk if content_type else None,
            "source_object_id": source_fields.get("source_object_id", ""),
            **_verdict(conversion, checking_provider(using, site)),
        },
    )
    return event


def _built_event(
    site: TrackingSite, content_type: ContentType | None, values: dict[str, Any]
) -> ConversionEvent:
    """``ConversionEvent(site=site, ...)`` from values by attname.

    Fields left out take their defaults, and the site and content type are attached as
    keyword building attaches them, so reading ``event.site`` makes no query.
    """
    defaults, made_defaults = _event_defaults()
    fields = {**defaults, **values}  # in field order: the defaults hold every field
    for field in made_defaults:
        if field.attname not in values:
            fields[field.attname] = field.get_default()
    if bulk.init_watched(ConversionEvent):
        event = ConversionEvent(*fields.values())  # so that the receivers run
    else:
        event = bulk.bare_instance(ConversionEvent, fields)  # twice on every tracked save
    ConversionEvent.site.field.set_cached_value(event, site)
    if content_type is not None:
        ConversionEvent.source_content_type.field.set_cached_value(event, content_type)
    return event


_defaults: tuple[dict[str, Any], list[models.Field[Any, Any]]] | None = None


def _event_defaults() -> tuple[dict[str, Any], list[models.Field[Any, Any]]]:
    """ConversionEvent's fields with their constant defaults (None for the others), in field
    order, and the fields whose default is made anew for each row (a new event id)."""
    global _defaults
    if _defaults is None:
        fields = ConversionEvent._meta.concrete_fields
        made = [f for f in fields if f.has_default() and callable(f.default)]
        _defaults = ({f.attname: None if f in made else f.get_default() for f in fields}, made)
    return _defaults


def _verdict(conversion: Conversion, provider: Provider) -> dict[str, Any]:
    """Status, reason and stored snapshot of an event from the provider's view of the
    conversion."""
    reason = provider.ineligible_reason(conversion)
    return {
        "status": EventStatus.SKIPPED if reason else EventStatus.PENDING,
        "last_error": reason or "",
        "snapshot": provider.minimize(conversion).to_snapshot(),
    }


def _rebuild(
    event: ConversionEvent, conversion: Conversion, key: str, using: str
) -> ConversionEvent:
    """Turn an earlier "could not build" row of this order into a real event."""
    for name, value in _verdict(conversion, event.site.provider_instance()).items():
        setattr(event, name, value)
    event.dedup_key = key
    event.order_reference = conversion.order_id or event.order_reference
    event.attempts = 0
    event.save(using=using)
    return event


def _after_commit(events: list[ConversionEvent], using: str) -> None:
    pending = [e.pk for e in events if e.status == EventStatus.PENDING]

    def notify_and_enqueue() -> None:
        event_queued.send(sender=ConversionEvent, events=events)
        if pending:
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
