"""Retention and erasure of delivery attempts: one attempt per request, shared by the events
of a batch, each event with its own result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_conversions import Conversion, Customer, track
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventResult, EventStatus
from django_conversions.privacy import (
    SCRUBBED_MARK,
    forget_customer,
    purge_old_events,
    scrub_old_events,
)
from tests.attempts import record_attempt, scanova_batch_body

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ANA = "ana.pop@example.com"
BOB = "bob@example.org"


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def event_for(email: str, order_id: str, *, age: timedelta, status: str) -> ConversionEvent:
    (event,) = track(
        Conversion(
            event_name="purchase",
            order_id=order_id,
            value=Decimal("10.00"),
            currency="EUR",
            scan_session_id=str(uuid.uuid4()),
            consent="granted",
            customer=Customer(email=email, phone="+40775123123"),
        )
    )
    ConversionEvent.objects.filter(pk=event.pk).update(created_at=NOW - age, status=status)
    return ConversionEvent.objects.get(pk=event.pk)


def batch(events: list[ConversionEvent], *, age: timedelta, **fields: Any) -> DeliveryAttempt:
    body = scanova_batch_body(events)
    return record_attempt(
        events,
        created_at=NOW - age,
        http_status=200,
        request_body=body,
        response_body=body,
        **fields,
    )


# --- purge --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_purge_deletes_old_attempts_and_results_in_batches_and_keeps_recent_ones(
    scanova_site, monkeypatch
):
    # given: five old delivered events sent in batches of two or one
    monkeypatch.setattr("django_conversions.privacy.BATCH", 2)
    old_age, young_age = timedelta(days=200), timedelta(days=10)
    with conversions(RETENTION_DAYS=180):
        old = [
            event_for(f"o{n}@example.com", f"OLD-{n}", age=old_age, status=EventStatus.DELIVERED)
            for n in range(5)
        ]
        batch(old[:2], age=old_age)
        batch(old[2:4], age=old_age)
        batch(old[4:], age=old_age)
        # a young event, and a young attempt that carried it with an old failed event
        young = event_for(ANA, "YOUNG", age=young_age, status=EventStatus.DELIVERED)
        late = event_for(BOB, "LATE", age=old_age, status=EventStatus.FAILED)
        shared = batch([late, young], age=young_age)
        # an old attempt of an event still waiting (a paused site): past retention all the same
        waiting = event_for(BOB, "WAITING", age=old_age, status=EventStatus.PENDING)
        batch([waiting], age=old_age)
        # when
        dry = purge_old_events(now=NOW, dry_run=True)
        with CaptureQueriesContext(connection) as queries:
            report = purge_old_events(now=NOW)
    # then
    assert str(report) == str(dry) == "6 events (5 delivered, 1 failed), 4 attempts"
    assert set(ConversionEvent.objects.values_list("order_reference", flat=True)) == {
        "YOUNG",
        "WAITING",
    }
    assert list(DeliveryAttempt.objects.all()) == [shared]
    assert list(EventResult.objects.values_list("event__order_reference", flat=True)) == ["YOUNG"]
    event_deletes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith('DELETE FROM "django_conversions_conversionevent"')
    ]
    assert len(event_deletes) == 3  # 6 events, 2 per batch: never one long statement


@pytest.mark.django_db(transaction=True)
def test_an_attempt_whose_events_are_all_purged_goes_with_them(scanova_site):
    # given: an attempt younger than the retention, but its only event is past it
    with conversions(RETENTION_DAYS=180):
        event = event_for(ANA, "A", age=timedelta(days=181), status=EventStatus.DELIVERED)
        batch([event], age=timedelta(days=179))
        # when
        report = purge_old_events(now=NOW)
    # then
    assert report.attempts == 1
    assert not DeliveryAttempt.objects.exists() and not EventResult.objects.exists()


# --- scrub --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_scrub_clears_request_and_response_bodies_errors_and_messages(scanova_site):
    # given
    with conversions(SCRUB_AFTER_DAYS=30):
        old = event_for(ANA, "OLD", age=timedelta(days=31), status=EventStatus.FAILED)
        attempt = batch(
            [old],
            age=timedelta(days=31),
            error=f"HTTP 422: {ANA} refused",
            outcome="failed",
            messages={old.pk: f"{ANA} is not a known buyer"},
        )
        young = event_for(BOB, "YOUNG", age=timedelta(days=1), status=EventStatus.DELIVERED)
        kept = batch([young], age=timedelta(days=1))
        # when
        report = scrub_old_events(now=NOW)
        again = scrub_old_events(now=NOW)
    # then
    assert report.attempts == 1 and again.attempts == 0
    attempt.refresh_from_db()
    assert (attempt.request_body, attempt.response_body, attempt.error) == (SCRUBBED_MARK,) * 3
    assert (attempt.http_status, attempt.outcome) == (200, "failed")  # the record stays
    assert old.results.get().message == SCRUBBED_MARK
    kept_body = DeliveryAttempt.objects.get(pk=kept.pk).request_body
    assert kept_body == scanova_batch_body([young])


# --- forget -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_forget_scrubs_every_request_body_that_carried_the_customer(scanova_site):
    # given: Ana's event went out alone once, then in a batch with Bob's
    with conversions():
        ana = event_for(ANA, "A", age=timedelta(days=1), status=EventStatus.DELIVERED)
        bob = event_for(BOB, "B", age=timedelta(days=1), status=EventStatus.DELIVERED)
        alone = batch([ana], age=timedelta(days=2), outcome="retry", error="HTTP 503")
        shared = batch([ana, bob], age=timedelta(days=1))
        bobs_own = batch([bob], age=timedelta(days=3), outcome="retry")
        ana_hash = ana.snapshot["customer"]["email_sha256"]
        # when
        dry = forget_customer(email=ANA, dry_run=True)
        report = forget_customer(email=ANA)
    # then: no stored request or answer holds her any more, the shared one included
    assert dry.attempts == report.attempts == 2
    for attempt in (alone, shared):
        attempt.refresh_from_db()
        assert attempt.request_body == attempt.response_body == SCRUBBED_MARK
    assert not DeliveryAttempt.objects.filter(request_body__contains=ana_hash).exists()
    assert not DeliveryAttempt.objects.filter(response_body__contains=ana_hash).exists()
    # Bob keeps his own data and the request that carried only him
    bob.refresh_from_db()
    assert "customer" in bob.snapshot
    assert DeliveryAttempt.objects.get(pk=bobs_own.pk).request_body == scanova_batch_body([bob])
