"""Privacy: consent per provider, stored-data minimisation, retention, erasure, log hygiene."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_conversions import Conversion, Customer, track
from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.privacy import (
    SCRUBBED_MARK,
    forget_customer,
    purge_old_events,
    redact_personal,
    scrub_old_events,
)
from tests.attempts import record_attempt

SCANOVA_URL = "https://track.example.test/server-events"
VT_URL = "https://vt.example.test/v1/event/"
EMAIL = "Ana.Pop@Example.com"
PHONE = "+40 775 123 123"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def conversions(**extra):
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def purchase(order_id: str = "P-1", consent: str | None = "granted", **customer) -> Conversion:
    details = {"email": EMAIL, "phone": PHONE, "first_name": "Ana", "city": "Cluj"} | customer
    return Conversion(
        event_name="purchase",
        order_id=order_id,
        value=Decimal("42.00"),
        currency="RON",
        scan_session_id=str(uuid.uuid4()),
        customer=Customer(**details),
        consent=consent,
    )


def by_provider(events):
    return {event.site.provider: event for event in events}


# --- consent x provider -------------------------------------------------------------------

CONSENT_MATRIX = [
    # consent, Scanova status, Scanova gets identifiers, VTmarketing status
    ("granted", EventStatus.DELIVERED, True, EventStatus.DELIVERED),
    (None, EventStatus.DELIVERED, True, EventStatus.SKIPPED),
    ("pending", EventStatus.DELIVERED, False, EventStatus.SKIPPED),
    ("denied", EventStatus.DELIVERED, False, EventStatus.SKIPPED),
]


@pytest.mark.parametrize(("consent", "scanova_status", "identifiers", "vt_status"), CONSENT_MATRIX)
@pytest.mark.django_db(transaction=True)
def test_consent_matrix(
    scanova_site, vt_site, mocked_http, consent, scanova_status, identifiers, vt_status
):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    mocked_http.post(VT_URL, json={"results": {"message": "Event created"}})
    with conversions():
        events = by_provider(track(purchase(consent=consent)))
        recorded = {name: dict(event.snapshot) for name, event in events.items()}
        deliver_due()
    for event in events.values():
        event.refresh_from_db()
    assert events["scanova"].status == scanova_status
    assert events["vtmarketing"].status == vt_status
    if vt_status == EventStatus.SKIPPED:
        assert f"consent {consent or 'unknown'}" in events["vtmarketing"].last_error
    sent = {call.request.url: json.loads(call.request.body) for call in mocked_http.calls}
    scanova_body = sent[SCANOVA_URL]
    assert ("user_identifiers" in scanova_body) is identifiers
    assert (consent is not None) is ("consent" in scanova_body)
    # nothing the provider may not get is even stored for it
    assert ("customer" in recorded["scanova"]) is identifiers
    # and once delivered, the customer's data is kept nowhere
    assert "customer" not in events["scanova"].snapshot


@pytest.mark.django_db(transaction=True)
def test_shop_policy_can_waive_consent_for_vtmarketing(vt_site, mocked_http):
    mocked_http.post(VT_URL, json={"results": {"message": "Event created"}})
    policy = {"vtmarketing": {"requires_consent": False}}
    with conversions(CONSENT_POLICY=policy):
        [event] = track(purchase(consent=None))
        deliver_due()
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert json.loads(mocked_http.calls[0].request.body)["user"]["email"] == EMAIL.lower()


@pytest.mark.django_db(transaction=True)
def test_denied_consent_is_still_honoured_when_consent_is_waived(vt_site, mocked_http):
    with conversions(CONSENT_POLICY={"vtmarketing": {"requires_consent": False}}):
        [event] = track(purchase(consent="denied"))
    assert event.status == EventStatus.SKIPPED


# --- minimisation -------------------------------------------------------------------------


def raw_database_text() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT snapshot FROM django_conversions_conversionevent")
        return " ".join(str(row[0]) for row in cursor.fetchall())


@pytest.mark.django_db(transaction=True)
def test_with_only_scanova_no_raw_email_or_phone_is_stored(scanova_site):
    with conversions():
        [event] = track(purchase())
    stored = raw_database_text()
    assert EMAIL.lower() not in stored and "775123123" not in stored
    assert "Ana" not in stored and "Cluj" not in stored  # Scanova takes neither
    assert set(event.snapshot["customer"]) == {"email_sha256", "phone_sha256"}


@pytest.mark.django_db(transaction=True)
def test_each_site_stores_only_what_its_provider_needs(scanova_site, vt_site):
    with conversions():
        events = by_provider(track(purchase(external_id="u-7")))
    assert set(events["scanova"].snapshot["customer"]) == {
        "email_sha256",
        "phone_sha256",
        "external_id",
    }
    assert set(events["vtmarketing"].snapshot["customer"]) == {
        "email",
        "phone",
        "first_name",
        "city",
    }


# --- retention ----------------------------------------------------------------------------


def aged(event: ConversionEvent, age: timedelta, status: str = EventStatus.DELIVERED) -> None:
    ConversionEvent.objects.filter(pk=event.pk).update(created_at=NOW - age, status=status)
    record_attempt(
        [event],
        created_at=NOW - age,
        http_status=200,
        outcome="delivered",
        request_body='{"email": "x"}',
        response_body='{"email": "x"}',
    )


@pytest.mark.django_db(transaction=True)
def test_scrub_boundary_and_what_is_kept(scanova_site, vt_site):
    with conversions(SCRUB_AFTER_DAYS=30):
        old = track(purchase("OLD"))
        young = track(purchase("YOUNG"))
        waiting = track(purchase("WAITING"))
        for event in old:
            aged(event, timedelta(days=30, seconds=1))
        for event in young:
            aged(event, timedelta(days=30) - timedelta(seconds=1))
        for event in waiting:  # old but still pending: never touched
            ConversionEvent.objects.filter(pk=event.pk).update(created_at=NOW - timedelta(days=90))
        # when
        dry = scrub_old_events(now=NOW, dry_run=True)
        report = scrub_old_events(now=NOW)
        again = scrub_old_events(now=NOW)
    # then
    assert sum(dry.events.values()) == sum(report.events.values()) == 2
    assert sum(again.events.values()) == 0  # idempotent
    for event in old:
        event.refresh_from_db()
        assert "customer" not in event.snapshot and "scan_session_id" not in event.snapshot
        assert event.snapshot["order_id"] == "OLD" and event.snapshot["value"] == "42.00"
        assert event.status == EventStatus.DELIVERED and event.event_id
        attempt = event.results.get().attempt
        assert attempt.request_body == attempt.response_body == SCRUBBED_MARK
        assert attempt.http_status == 200
    for event in [*young, *waiting]:
        event.refresh_from_db()
        assert "customer" in event.snapshot


@pytest.mark.django_db(transaction=True)
def test_purge_boundary(scanova_site):
    with conversions(RETENTION_DAYS=180):
        [old] = track(purchase("OLD"))
        [young] = track(purchase("YOUNG"))
        [waiting] = track(purchase("WAITING"))
        aged(old, timedelta(days=180, seconds=1), EventStatus.FAILED)
        aged(young, timedelta(days=179))
        ConversionEvent.objects.filter(pk=waiting.pk).update(created_at=NOW - timedelta(days=365))
        dry = purge_old_events(now=NOW, dry_run=True)
        assert ConversionEvent.objects.count() == 3
        report = purge_old_events(now=NOW)
    assert str(report) == str(dry) == "1 events (1 failed), 1 attempts"
    assert set(ConversionEvent.objects.values_list("order_reference", flat=True)) == {
        "YOUNG",
        "WAITING",
    }


@pytest.mark.django_db(transaction=True)
def test_purge_command_prints_what_it_did(scanova_site, capsys):
    with conversions():
        [event] = track(purchase())
        aged(event, timedelta(days=400))
        call_command("conversions_purge", "--dry-run")
        assert ConversionEvent.objects.count() == 1
        call_command("conversions_purge")
    out = capsys.readouterr().out
    assert "Would scrub personal data older than 30 days: 1 events (1 delivered)" in out
    assert "Did delete events older than 180 days: 1 events (1 delivered), 1 attempts" in out
    assert ConversionEvent.objects.count() == 0


# --- erasure ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_forget_scrubs_every_status_and_skips_what_needs_the_data(scanova_site, vt_site):
    with conversions():
        delivered = by_provider(track(purchase("A")))
        pending = by_provider(track(purchase("B")))
        other = by_provider(track(purchase("C", email="someone@else.example", phone="+4071111")))
        for event in delivered.values():
            aged(event, timedelta(days=1))
        # when: the customer asks to be forgotten (any spelling of the address)
        report = forget_customer(email="  ana.pop@EXAMPLE.com ")
    # then: every trace is gone, in both providers' forms (raw and hashed)
    assert sum(report.events.values()) == 4 and report.attempts == 2
    stored = raw_database_text()
    assert "ana.pop@example.com" not in stored
    for event in [*delivered.values(), *pending.values()]:
        event.refresh_from_db()
        assert "customer" not in event.snapshot
    # Scanova can still be told about the order, VTmarketing can't without the email
    assert pending["scanova"].status == EventStatus.PENDING
    assert pending["vtmarketing"].status == EventStatus.SKIPPED
    assert "erased on request" in pending["vtmarketing"].last_error
    for event in other.values():
        event.refresh_from_db()
        assert "customer" in event.snapshot


@pytest.mark.django_db(transaction=True)
def test_forget_by_phone_and_the_command(scanova_site, capsys):
    with conversions():
        [event] = track(purchase(email=None))
        call_command("conversions_forget", "--phone", "+40 (775) 123-123")
    event.refresh_from_db()
    assert "customer" not in event.snapshot
    out = capsys.readouterr().out
    assert "Scrubbed the customer's data from 1 events (1 pending)" in out
    assert "775" not in out


# --- logs ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_email_or_phone_in_logs_at_info_or_above(scanova_site, vt_site, mocked_http, caplog):
    # given: providers whose error answers echo the customer's data back
    mocked_http.post(SCANOVA_URL, status=422, json={"detail": f"raw email {EMAIL} in properties"})
    mocked_http.post(VT_URL, status=400, json={"errors": [{"message": f"bad phone {PHONE}"}]})
    caplog.set_level(logging.INFO)
    from tests.testapp.models import Order

    with conversions():
        Order.objects.create(
            number="L-1", status="paid", total=Decimal("9"), currency="EUR", email=EMAIL,
            phone=PHONE, scan_session_id=str(uuid.uuid4()), tracking_consent="granted",
        )  # fmt: skip
        Order.objects.create(number="L-2", status="paid", total=Decimal("-1"), email=EMAIL)
        deliver_due()
    assert ConversionEvent.objects.filter(status=EventStatus.FAILED).count() >= 2
    logged = "\n".join(
        r.getMessage() + (r.exc_text or "") for r in caplog.records if r.levelno >= logging.INFO
    )
    assert logged  # the failures were logged...
    for secret in (EMAIL, EMAIL.lower(), "775 123 123", "775123123"):
        assert secret not in logged  # ...without the customer's data


def test_redact_personal():
    assert redact_personal("mail a.b+c@x-y.example.org now") == "mail [email] now"
    assert redact_personal("call +40 (775) 123-123.") == "call [phone]."
    assert redact_personal("HTTP 500 after 3 attempts") == "HTTP 500 after 3 attempts"


def test_redact_personal_keeps_an_ip_address_and_masks_a_dotted_phone_number():
    reason = "not sent: api.example resolves to 127.0.0.1"
    assert redact_personal(reason) == reason
    assert redact_personal("call 555.123.4567") == "call [phone]"
