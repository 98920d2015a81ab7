"""Personal data over time: scrub it, purge old events, forget one customer on request.

What is stored in the first place is decided by ``Provider.minimize()`` (each site's event
keeps only what its provider needs, hashed where the provider only takes hashes) and by the
consent policy (``consent.py``). This module handles what happens afterwards:

``scrub_old_events()``
    Finished events older than ``SCRUB_AFTER_DAYS`` lose every personal field of their
    snapshot and their stored response bodies; the delivery record (status, times, event id,
    order, amounts, items) stays for the shop's accounts.
``purge_old_events()``
    Finished events older than ``RETENTION_DAYS`` are deleted with their attempts.
``forget_customer()``
    Every stored trace of one customer's email or phone is scrubbed, in events of any status;
    pending events are then sent without it, or skipped where the provider needs it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
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
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventStatus

FINISHED = (EventStatus.DELIVERED, EventStatus.SKIPPED, EventStatus.FAILED)
# Snapshot keys that identify or may identify a person; everything else is order facts.
PERSONAL_KEYS = ("customer", "scan_session_id", "properties")
SCRUBBED_MARK = "personal data removed"
ERASED_REASON = "customer data erased on request"
BATCH = 500

_PHONE = re.compile(r"\+?\d[\d ()./-]{6,}\d")


def redact_personal(text: str) -> str:
    """``text`` with email addresses and phone numbers masked, for log lines and reasons."""
    return _PHONE.sub("[phone]", EMAIL_PATTERN.sub("[email]", text))


@dataclass
class PrivacyReport:
    events: Counter[str] = field(default_factory=Counter)
    attempts: int = 0

    def __str__(self) -> str:
        by_status = ", ".join(f"{n} {status}" for status, n in sorted(self.events.items()))
        return (
            f"{sum(self.events.values())} events ({by_status or 'none'}), {self.attempts} attempts"
        )


def _in_batches(queryset: QuerySet[ConversionEvent]) -> Iterator[list[ConversionEvent]]:
    """Rows in primary-key order, BATCH at a time, each batch re-read (safe while it changes)."""
    last = 0
    while True:
        batch = list(queryset.filter(pk__gt=last).order_by("pk")[:BATCH])
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def scrub_snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in snapshot.items() if key not in PERSONAL_KEYS}


def _has_personal_data() -> Q:
    query = Q()
    for key in PERSONAL_KEYS:
        query |= Q(snapshot__has_key=key)
    return query


def scrub_old_events(*, now: datetime | None = None, dry_run: bool = False) -> PrivacyReport:
    """Remove personal data from finished events older than SCRUB_AFTER_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=conversions_settings.SCRUB_AFTER_DAYS)
    due = ConversionEvent.objects.filter(
        _has_personal_data(), status__in=FINISHED, created_at__lt=cutoff
    )
    report = PrivacyReport()
    for batch in _in_batches(due):
        report.events.update(event.status for event in batch)
        if dry_run:
            continue
        with transaction.atomic():
            for event in batch:
                event.snapshot = scrub_snapshot(event.snapshot)
                event.save(update_fields=["snapshot", "updated_at"])
            report.attempts += _scrub_attempts(batch)
    return report


def _scrub_attempts(events: list[ConversionEvent]) -> int:
    return (
        DeliveryAttempt.objects.filter(event__in=events)
        .exclude(response_body=SCRUBBED_MARK)
        .exclude(response_body="")
        .update(response_body=SCRUBBED_MARK)
    )


def purge_old_events(*, now: datetime | None = None, dry_run: bool = False) -> PrivacyReport:
    """Delete finished events (and their attempts) older than RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=conversions_settings.RETENTION_DAYS)
    old = ConversionEvent.objects.filter(status__in=FINISHED, created_at__lt=cutoff)
    report = PrivacyReport()
    for batch in _in_batches(old):
        report.events.update(event.status for event in batch)
        report.attempts += DeliveryAttempt.objects.filter(event__in=batch).count()
        if not dry_run:
            ConversionEvent.objects.filter(pk__in=[e.pk for e in batch]).delete()
    return report


def forget_customer(
    *, email: str | None = None, phone: str | None = None, dry_run: bool = False
) -> PrivacyReport:
    """Scrub every stored trace of the customer with this email and/or phone.

    Call it from the shop's own account-deletion flow; ``manage.py conversions_forget`` does
    the same from a shell. Events that were not sent yet keep their order facts and are sent
    without the customer's data, or skipped where the provider can't take them without it.
    """
    matches = _customer_events(email, phone)
    report = PrivacyReport()
    for batch in _in_batches(ConversionEvent.objects.filter(matches).select_related("site")):
        report.events.update(event.status for event in batch)
        if dry_run:
            continue
        with transaction.atomic():
            for event in batch:
                _forget_in(event)
            report.attempts += _scrub_attempts(batch)
    return report


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
