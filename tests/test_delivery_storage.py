"""What a delivery keeps: a request that delivered all it carried is stored as an outline, and
its events keep neither the customer's data nor what the order holds; anything else that
failed keeps the whole exchange, so a person can see why."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from django_conversions import Conversion, Customer, LineItem, track
from django_conversions.delivery import deliver_due
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventStatus
from django_conversions.privacy import forget_customer

BATCH_URL = "https://track.example.test/server-events/batch"
VT_URL = "https://vt.example.test/v1/event/"


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def purchase(order_id: str, email: str = "ana@example.com") -> list[ConversionEvent]:
    return track(
        Conversion(
            event_name="purchase",
            order_id=order_id,
            value=Decimal("10.50"),
            currency="EUR",
            scan_session_id=str(uuid.uuid4()),
            customer=Customer(email=email),
            consent="granted",
            items=[LineItem(id="sku-1", quantity=2, price=Decimal("5.25"))],
        )
    )


@pytest.mark.django_db(transaction=True)
def test_a_request_that_delivered_everything_keeps_its_outline_only(scanova_site, mocked_http):
    # given: a batch the provider takes whole
    mocked_http.post(BATCH_URL, json={"success": True})
    with conversions():
        events = [purchase(f"S-{n}")[0] for n in range(3)]
        report = deliver_due()
    # then: one attempt with what it was, none of what it carried
    assert report.delivered == 3
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.http_status, attempt.outcome, attempt.event_count) == (200, "delivered", 3)
    assert attempt.url == BATCH_URL and attempt.duration_ms >= 0
    assert (attempt.request_body, attempt.response_body, attempt.error) == ("", "", "")
    assert attempt.request_headers == attempt.response_headers == {}
    assert attempt.results.count() == 3
    # and the events keep the order's totals, not the customer nor the lines
    for event in events:
        event.refresh_from_db()
        assert event.status == EventStatus.DELIVERED
        assert event.snapshot == {"currency": "EUR", "consent": "granted", "value": "10.50"}


@pytest.mark.django_db(transaction=True)
def test_a_batch_with_a_rejected_event_keeps_the_whole_exchange(scanova_site, mocked_http):
    # given: the provider takes one event of two and rejects the other
    with conversions():
        kept, refused = (purchase(order)[0] for order in ("S-1", "S-2"))
        mocked_http.post(
            BATCH_URL,
            json={"rejected": [{"event_id": str(refused.event_id), "detail": "bad value"}]},
        )
        deliver_due()
    # then: the request and the answer are there to read, and both events keep their data
    attempt = DeliveryAttempt.objects.get()
    assert {e["event_id"] for e in json.loads(attempt.request_body)["events"]} == {
        str(kept.event_id),
        str(refused.event_id),
    }
    assert "bad value" in attempt.response_body and attempt.request_headers
    for event in (kept, refused):
        event.refresh_from_db()
        assert "customer" in event.snapshot and event.snapshot["items"]
    assert kept.status == EventStatus.DELIVERED and refused.status == EventStatus.FAILED
    # and forgetting the delivered customer still finds the body that carried them
    forget_customer(email="ana@example.com")
    attempt.refresh_from_db()
    assert "ana" not in attempt.request_body


@pytest.mark.django_db(transaction=True)
def test_a_failed_request_keeps_its_texts_and_the_event_its_conversion(vt_site, mocked_http):
    # given: a provider answering with an error the event is retried after
    mocked_http.post(VT_URL, status=503, body="busy", headers={"X-Trace": "t-1"})
    with conversions():
        [event] = purchase("V-1")
        deliver_due()
    # then
    attempt = DeliveryAttempt.objects.get()
    assert attempt.response_body == "busy" and attempt.response_headers.get("X-Trace") == "t-1"
    assert json.loads(attempt.request_body) and attempt.request_headers
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and "customer" in event.snapshot


@pytest.mark.django_db(transaction=True)
def test_a_repeat_save_of_a_delivered_order_keeps_one_trimmed_event(vt_site, mocked_http):
    # given: an order delivered, its conversion trimmed
    mocked_http.post(VT_URL, json={"results": {"message": "Event created"}})
    with conversions():
        [event] = purchase("V-2")
        deliver_due()
        # when: the same order is tracked again
        [again] = purchase("V-2")
    # then: the same event, delivered, nothing new to send
    assert again.pk == event.pk and again.status == EventStatus.DELIVERED
    assert ConversionEvent.objects.count() == 1 and len(mocked_http.calls) == 1
