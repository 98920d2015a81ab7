"""Personal data over time: scrub it, purge old events, forget one customer on request.

What is stored in the first place is decided by ``Provider.minimize()`` (each site's event
keeps only what its provider needs, hashed where the provider only takes hashes) and by the
consent policy (``consent.py``). This module handles what happens afterwards:

``scrub_old_events()``
    Finished events older than ``SCRUB_AFTER_DAYS`` lose every personal field of their
    snapshot, and the attempts that carried them their request and response bodies, errors
    and per-event messages; the delivery record (status, times, HTTP statuses, event id,
    order, amounts, items) stays for the shop's accounts.
``purge_old_events()``
    Finished events older than ``RETENTION_DAYS`` are deleted with their results, and so are
    attempts older than that and attempts no event refers to any more.
``forget_customer()``
    Every stored trace of one customer's email or phone is scrubbed, in events of any status;
    pending events are then sent without it, or skipped where the provider needs it.

Sooner than all of these: an event delivered by a request that delivered everything it
carried keeps neither the customer's data nor a copy of the request. The recorder stores such
a request's outline only (URL, status, duration) and trims the event's conversion to
``delivered_snapshot()`` (the total, currency and consent) in the same write.

An attempt is one HTTP request, and a batch request carries several customers' events: its
request body holds all of them. Scrubbing or forgetting one of its events scrubs the whole
body (and the answer), so the other customers' events lose that copy of their request too.
Everything here works in batches of ``BATCH`` rows, each in its own transaction, so no run
holds a long lock on a live shop's tables.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import router, transaction
from django.db.models import Case, F, Model, Q, QuerySet, Value, When
from django.db.models.functions import JSONObject
from django.utils import timezone

from django_conversions.conf import conversions_settings
from django_conversions.conversion import (
    Conversion,
    InvalidConversion,
    normalize_email,
    normalize_phone,
    sha256_hex,
)
from django_conversions.masking import EMAIL_PATTERN
from django_conversions.models import (
    ConversionEvent,
    DeliveryAttempt,
    EventResult,
    EventStatus,
    OrderAttribution,
)

ModelT = TypeVar("ModelT", bound=Model)

FINISHED = (EventStatus.DELIVERED, EventStatus.SKIPPED, EventStatus.FAILED)
# Snapshot keys that identify or may identify a person; everything else is order facts.
PERSONAL_KEYS = ("customer", "scan_session_id", "properties")
# What a delivered event keeps of its snapshot (see ``delivered_snapshot``).
DELIVERED_KEYS = ("value", "currency", "consent")
SCRUBBED_MARK = "personal data removed"
ERASED_REASON = "customer data erased on request"
BATCH = 1000
# The attempt texts that may quote personal data: the request as sent, the provider's answer
# and the error made from it.
ATTEMPT_TEXTS = ("request_body", "response_body", "error")

_PHONE = re.compile(r"\+?\d[\d ()./-]{6,}\d")
# A dotted IPv4 address looks like a phone number written with dots; it names a server, not a
# person, and a reason without it ("resolves to 127.0.0.1") says nothing.
_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")


def redact_personal(text: str) -> str:
    """``text`` with email addresses and phone numbers masked, for log lines and reasons."""
    return _PHONE.sub(_phone_mask, EMAIL_PATTERN.sub("[email]", text))


def _phone_mask(match: re.Match[str]) -> str:
    return match.group() if _IPV4.fullmatch(match.group()) else "[phone]"


@dataclass
class PrivacyReport:
    events: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    #: Orders' visit attributions (scan session id, consent) deleted.
    attributions: int = 0

    def __str__(self) -> str:
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(self.events.items()))
        text = (
            f"{sum(self.events.values())} events ({by_status or 'none'}), {self.attempts} attempts"
        )
        if self.attributions:
            text += f", {self.attributions} order attributions"
        return text


def _in_batches(
    queryset: QuerySet[ModelT], size: int | None = None
) -> Iterator[tuple[list[ModelT], QuerySet[ModelT]]]:
    """Rows in primary-key order, ``size`` (default ``BATCH``) at a time, each batch re-read
    (safe while it changes), with the same rows as a queryset (a primary-key range of
    ``queryset``, its conditions repeated, so a row in the range that no longer matches is left
    alone): statements on a batch use it as a subquery, never a list of parameters."""
    size = max(1, size or BATCH)
    last = 0
    while True:
        batch = list(queryset.filter(pk__gt=last).order_by("pk")[:size])
        if not batch:
            return
        yield batch, queryset.filter(pk__gte=batch[0].pk, pk__lte=batch[-1].pk)
        last = batch[-1].pk


def _using() -> str:
    return router.db_for_write(ConversionEvent)


def scrub_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in snapshot.items() if key not in PERSONAL_KEYS}


def delivered_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a delivered event keeps of its conversion once its request is stored without a
    body (the recorder decides when): the order's total, currency and consent, a key the
    conversion lacked as null. Not the customer's data, nor what the event's own columns or
    the order hold (event name, order id, line items)."""
    return {key: snapshot.get(key) for key in DELIVERED_KEYS}


def delivered_snapshot_sql() -> JSONObject:
    """``delivered_snapshot`` for ``update()``: the database builds it from each row's own
    snapshot, so one statement trims any number of events."""
    return JSONObject(**{key: F(f"snapshot__{key}") for key in DELIVERED_KEYS})


def _has_personal_data() -> Q:
    query = Q()
    for key in PERSONAL_KEYS:
        query |= Q(snapshot__has_key=key)
    return query


def scrub_old_events(
    *, now: datetime | None = None, dry_run: bool = False, batch_size: int | None = None
) -> PrivacyReport:
    """Remove personal data from finished events older than SCRUB_AFTER_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=conversions_settings.SCRUB_AFTER_DAYS)
    due = ConversionEvent.objects.filter(
        _has_personal_data(), status__in=FINISHED, created_at__lt=cutoff
    )
    report = PrivacyReport()
    for batch, rows in _in_batches(due, batch_size):
        report.events.update(event.status for event in batch)
        if dry_run:
            report.attempts += _attempts_to_scrub(rows).count()
            continue
        with transaction.atomic(using=_using()):
            # First: once scrubbed, the events no longer match ``rows``.
            report.attempts += _scrub_attempts(rows)
            for event in batch:
                event.snapshot = scrub_snapshot(event.snapshot)
                event.save(update_fields=["snapshot", "updated_at"])
    report.attributions = _delete_old_attributions(cutoff, dry_run)
    return report


def _delete_old_attributions(cutoff: datetime, dry_run: bool) -> int:
    """Orders' visit attributions older than the cutoff: a scan counts for as long as
    personal data is kept (an order paid later is sent without them)."""
    old = OrderAttribution.objects.filter(created_at__lt=cutoff)
    if dry_run:
        return old.count()
    deleted = 0
    for _batch, rows in _in_batches(old.only("pk")):
        with transaction.atomic(using=_using()):
            deleted += rows.delete()[0]
    return deleted


def _attempts_to_scrub(events: QuerySet[ConversionEvent]) -> QuerySet[DeliveryAttempt]:
    """Attempts that carried any of ``events`` and still hold a text that may be personal."""
    carried = EventResult.objects.filter(event__in=events.values("pk")).values("attempt_id")
    already = Q()
    for name in ATTEMPT_TEXTS:
        already &= Q(**{f"{name}__in": ("", SCRUBBED_MARK)})
    return DeliveryAttempt.objects.filter(pk__in=carried).exclude(already)


def _scrub_attempts(events: QuerySet[ConversionEvent]) -> int:
    """Scrub the attempts that carried ``events`` (whole bodies: see the module docstring) and
    the provider's messages about these events. Returns how many attempts changed."""
    results = EventResult.objects.filter(event__in=events.values("pk"))
    results.exclude(message="").update(message=SCRUBBED_MARK)
    return _attempts_to_scrub(events).update(
        **{
            name: Case(When(**{name: ""}, then=Value("")), default=Value(SCRUBBED_MARK))
            for name in ATTEMPT_TEXTS
        }
    )


def purge_old_events(
    *, now: datetime | None = None, dry_run: bool = False, batch_size: int | None = None
) -> PrivacyReport:
    """Delete finished events older than RETENTION_DAYS (their results with them), attempts
    older than that, and attempts whose events are all gone: ``batch_size`` (default
    ``BATCH``) rows at a time, each batch in its own short transaction, so the shop's writes
    never wait long behind a purge."""
    cutoff = (now or timezone.now()) - timedelta(days=conversions_settings.RETENTION_DAYS)
    old = ConversionEvent.objects.filter(status__in=FINISHED, created_at__lt=cutoff)
    report = PrivacyReport()
    for batch, rows in _in_batches(old.only("pk", "status"), batch_size):
        report.events.update(event.status for event in batch)
        carried = EventResult.objects.filter(event__in=rows.values("pk")).values("attempt_id")
        # Attempts that carried only these events have nothing left to explain; the old ones
        # go with the attempts purged by age below.
        alone = DeliveryAttempt.objects.filter(pk__in=carried, created_at__gte=cutoff).exclude(
            pk__in=EventResult.objects.filter(attempt_id__in=carried)
            .exclude(event__in=rows.values("pk"))
            .values("attempt_id")
        )
        if dry_run:
            report.attempts += alone.count()
            continue
        with transaction.atomic(using=_using()):
            report.attempts += alone.delete()[1].get(DeliveryAttempt._meta.label, 0)
            rows.delete()
    for attempts, attempt_rows in _in_batches(
        DeliveryAttempt.objects.filter(created_at__lt=cutoff).only("pk"), batch_size
    ):
        report.attempts += len(attempts)
        if not dry_run:
            with transaction.atomic(using=_using()):
                attempt_rows.delete()
    return report


def forget_customer(
    *, email: str | None = None, phone: str | None = None, dry_run: bool = False
) -> PrivacyReport:
    """Scrub every stored trace of the customer with this email and/or phone.

    Call it from the shop's own account-deletion flow; ``manage.py conversions_forget`` does
    the same from a shell. Events that were not sent yet keep their order facts and are sent
    without the customer's data, or skipped where the provider can't take them without it.
    The requests that carried the customer's events lose their bodies, also where they
    carried other customers' events too (see the module docstring).
    """
    matches = _customer_events(email, phone)
    report = PrivacyReport()
    for batch, rows in _in_batches(ConversionEvent.objects.filter(matches).select_related("site")):
        report.events.update(event.status for event in batch)
        attributions = _attributions_of(batch)
        if dry_run:
            report.attempts += _attempts_to_scrub(rows).count()
            report.attributions += attributions.count()
            continue
        with transaction.atomic(using=_using()):
            # First: once forgotten, the events no longer match ``rows``.
            report.attempts += _scrub_attempts(rows)
            report.attributions += attributions.delete()[0]
            for event in batch:
                _forget_in(event)
    return report


def _attributions_of(events: list[ConversionEvent]) -> QuerySet[OrderAttribution]:
    """The visit attributions of the orders these events came from."""
    orders: dict[int, set[str]] = {}
    for event in events:
        if event.source_content_type_id is not None:
            orders.setdefault(event.source_content_type_id, set()).add(event.source_object_id)
    query = Q(pk__in=[])
    for type_id, object_ids in orders.items():
        query |= Q(order_content_type_id=type_id, order_object_id__in=sorted(object_ids))
    return OrderAttribution.objects.filter(query)


def _customer_events(email: str | None, phone: str | None) -> Q:
    query = Q(pk__in=[])
    if email:
        try:
            address = normalize_email(email)
        except InvalidConversion:
            address = email.strip().lower()
        query |= Q(snapshot__customer__email=address)
        query |= Q(snapshot__customer__email_sha256=sha256_hex(address))
    if phone:
        try:
            number = normalize_phone(phone, conversions_settings.DEFAULT_PHONE_COUNTRY_CODE)
        except InvalidConversion:
            number = phone.strip()
        query |= Q(snapshot__customer__phone=number)
        query |= Q(snapshot__customer__phone_sha256=sha256_hex(number))
    if not (email or phone):
        raise ValueError("forget_customer() needs an email or a phone")
    return query


def _forget_in(event: ConversionEvent) -> None:
    snapshot = dict(event.snapshot)
    snapshot.pop("customer", None)
    event.snapshot = snapshot
    fields = ["snapshot", "updated_at"]
    if event.status == EventStatus.PENDING:
        # Still to be sent: can the provider take the order without the customer?
        reason = event.site.provider_instance().ineligible_reason(
            Conversion.from_snapshot(snapshot)
        )
        if reason:
            event.status = EventStatus.SKIPPED
            event.last_error = f"{ERASED_REASON}; {reason}"
            fields += ["status", "last_error"]
    event.save(update_fields=fields)
