"""``manage.py conversions_retry``: skipped events judged again and failed ones re-sent after a
configuration fix, selected by status, site, order and time; never a delivered event."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, EventStatus
from tests.testapp.models import Order

SCAN = "550e8400-e29b-41d4-a716-446655440000"
VT_URL = "https://vt.example.test/v1/event/"
SCANOVA_URL = "https://track.example.test/server-events"
NO_CONSENT_NEEDED = {"vtmarketing": {"requires_consent": False}}


def retry(*args: str) -> str:
    out = StringIO()
    call_command("conversions_retry", *args, stdout=out)
    return out.getvalue()


def order(number: str, **fields: Any) -> Order:
    values = {"status": "paid", "total": Decimal("25"), "email": "ana@example.com", **fields}
    return Order.objects.create(number=number, **values)


def event_of(site: Any, number: str) -> ConversionEvent:
    return ConversionEvent.objects.get(site=site, order_reference=number)


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """Run what the command queues after its commit (delivery runs inline in the tests)."""

    def run(*args: str) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            return retry(*args)

    return run


def test_skipped_for_consent_are_sent_once_the_policy_is_fixed(vt_site, mocked_http, after_commit):
    # given: skipped, consent unknown
    mocked_http.post(VT_URL, json={"success": True})
    order("V-1")
    assert event_of(vt_site, "V-1").status == EventStatus.SKIPPED
    # when: the shop decides VTmarketing may have orders without recorded consent
    conversions = {**settings.CONVERSIONS, "CONSENT_POLICY": NO_CONSENT_NEEDED}
    with override_settings(CONVERSIONS=conversions):
        out = after_commit("--status", "skipped")
    # then
    assert event_of(vt_site, "V-1").status == EventStatus.DELIVERED
    assert "Retried 1 events: 1 event queued for delivery" in out


def test_skipped_events_still_ineligible_stay_skipped_with_the_reason(scanova_site, after_commit):
    # given: no scan, and none added since
    order("S-1")
    # when
    out = after_commit()
    # then
    event = event_of(scanova_site, "S-1")
    assert event.status == EventStatus.SKIPPED
    assert event.last_error.startswith("no scan session id")
    assert "1 still not eligible" in out


def test_a_skipped_event_is_rebuilt_from_the_fixed_order(scanova_site, mocked_http, after_commit):
    # given: skipped, then the order is given its scan id
    mocked_http.post(SCANOVA_URL, json={"success": True})
    placed = order("S-2")
    Order.objects.filter(pk=placed.pk).update(scan_session_id=SCAN)
    # when
    after_commit("--order", "S-2")
    # then
    event = event_of(scanova_site, "S-2")
    assert (event.status, event.last_error) == (EventStatus.DELIVERED, "")
    [call] = [c for c in mocked_http.calls if c.request.url == SCANOVA_URL]
    assert json.loads(call.request.body)["scan_session_id"] == SCAN


def test_failed_events_are_sent_again_and_delivered_ones_never(
    scanova_site, mocked_http, after_commit
):
    # given: one refused by the provider (fixed since), one delivered
    mocked_http.post(SCANOVA_URL, status=422, json={"success": False, "message": "bad site"})
    order("F-1", scan_session_id=SCAN)
    deliver_due()
    assert event_of(scanova_site, "F-1").status == EventStatus.FAILED
    mocked_http.replace("POST", SCANOVA_URL, json={"success": True})
    order("D-1", scan_session_id=SCAN)
    deliver_due()
    assert event_of(scanova_site, "D-1").status == EventStatus.DELIVERED
    sent_before = len(mocked_http.calls)
    # when: every status, even naming the delivered order
    out = after_commit("--order", "F-1", "--order", "D-1")
    # then
    assert event_of(scanova_site, "F-1").status == EventStatus.DELIVERED
    assert len(mocked_http.calls) == sent_before + 1
    assert "Retried 1 events" in out


def test_filters_by_site_name_or_id_status_and_time(scanova_site, vt_site):
    # given: four skipped events, two per site, one of each made long ago
    order("T-1")
    order("T-2")
    old = timezone.now() - timedelta(days=10)
    ConversionEvent.objects.filter(order_reference="T-1").update(created_at=old)
    day = (timezone.now() - timedelta(days=5)).date().isoformat()
    # then
    assert "Would retry 2 events" in retry("--site", "vtmarketing site", "--dry-run")
    assert "Would retry 2 events" in retry("--site", str(scanova_site.pk), "--dry-run")
    assert "Would retry 2 events" in retry("--since", day, "--dry-run")
    assert "Would retry 2 events" in retry("--until", day, "--dry-run")
    assert "Would retry 1 events" in retry("--until", day, "--site", "scanova site", "--dry-run")
    assert "No skipped or failed event matches" in retry("--status", "failed")


def test_dry_run_changes_nothing_and_says_what_would_happen(scanova_site, vt_site):
    # given
    order("Y-1", scan_session_id=SCAN)  # scanova pending; vtmarketing skipped (consent)
    placed = order("Y-2")  # both skipped
    Order.objects.filter(pk=placed.pk).update(scan_session_id=SCAN, tracking_consent="granted")
    before = list(ConversionEvent.objects.values_list("pk", "status", "snapshot", "last_error"))
    # when
    out = retry("--dry-run")
    # then
    assert list(ConversionEvent.objects.values_list("pk", "status", "snapshot", "last_error")) == (
        before
    )
    assert "Would retry 3 events: 2 queued for delivery; 1 still not eligible" in out
    assert "consent unknown" in out


def test_an_order_that_can_no_longer_be_built_fails_with_the_reason(scanova_site, after_commit):
    # given
    placed = order("B-1")
    Order.objects.filter(pk=placed.pk).update(currency="XXQ")
    # when
    out = after_commit()
    # then
    event = event_of(scanova_site, "B-1")
    assert event.status == EventStatus.FAILED
    assert event.last_error.startswith("Could not build the conversion")
    assert "could not be rebuilt" in out


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01"])
def test_a_bad_date_is_refused_with_the_option(db, value):
    with pytest.raises(CommandError, match=f"--since {value!r}"):
        retry("--since", value)


def test_a_build_failure_shows_the_orders_number(scanova_site):
    # when: the order can't be built (an unknown currency), but its number is readable
    order("N-77", currency="XXQ")
    # then
    event = ConversionEvent.objects.get()
    assert event.status == EventStatus.FAILED
    assert event.order_reference == "N-77"
