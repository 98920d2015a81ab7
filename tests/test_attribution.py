"""Attribution: the visit's scan session id and consent reach the order created in it, with no
code in the checkout, or through one call where the order is created elsewhere."""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import path

from django_conversions import attribute_order
from django_conversions.adapters import OrderAdapter
from django_conversions.attribution import Visit
from django_conversions.models import ConversionEvent, EventStatus, OrderAttribution
from django_conversions.privacy import forget_customer, scrub_old_events
from django_conversions.scan_session import remember_consent
from django_conversions.sweep import sweep
from tests.testapp.models import Order

SCAN = "550e8400-e29b-41d4-a716-446655440000"
MIDDLEWARE = [
    *settings.MIDDLEWARE[:2],  # security, sessions
    "django_conversions.middleware.ScanSessionMiddleware",
    *settings.MIDDLEWARE[2:],
]


# --- a small shop: landing, consent banner, checkout, and a payment started for a webhook ---


def landing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("welcome")


def consent(request: HttpRequest, value: str) -> HttpResponse:
    remember_consent(request, value)
    return HttpResponse(value)


def checkout(request: HttpRequest) -> HttpResponse:
    order = Order.objects.create(
        number=f"A-{uuid.uuid4().hex[:6]}",
        status=request.GET.get("status", "paid"),
        total=Decimal("49.90"),
        currency="EUR",
        email="ana@example.com",
    )
    return JsonResponse({"order": order.pk})


def start_payment(request: HttpRequest) -> HttpResponse:
    # What a shop stores in its payment's metadata, for the webhook that creates the order.
    return JsonResponse(Visit.from_request(request).as_dict())


urlpatterns = [
    path("", landing),
    path("consent/<str:value>/", consent),
    path("checkout/", checkout),
    path("pay/", start_payment),
]

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.test_attribution")]


@pytest.fixture(autouse=True)
def scan_middleware() -> Any:
    with override_settings(MIDDLEWARE=MIDDLEWARE):
        yield


@pytest.fixture
def both_sites(scanova_site, vt_site):
    return scanova_site, vt_site


def events_by_provider(order: Order) -> dict[str, ConversionEvent]:
    events = ConversionEvent.objects.filter(source_object_id=str(order.pk)).select_related("site")
    return {event.site.provider: event for event in events}


def qr_visitor(consent_value: str | None = "granted") -> Client:
    client = Client()
    client.get(f"/?scnv={SCAN}")
    if consent_value:
        client.get(f"/consent/{consent_value}/")
    return client


def test_an_order_created_in_a_qr_visitors_request_carries_the_scan_and_the_consent(both_sites):
    # given
    client = qr_visitor("granted")
    # when
    order = Order.objects.get(pk=client.get("/checkout/").json()["order"])
    # then
    attribution = OrderAttribution.objects.get()
    assert attribution.order == order
    assert (attribution.scan_session_id, attribution.consent) == (SCAN, "granted")
    events = events_by_provider(order)
    assert {p: e.status for p, e in events.items()} == {
        "scanova": EventStatus.PENDING,
        "vtmarketing": EventStatus.PENDING,
    }
    assert events["scanova"].snapshot["scan_session_id"] == SCAN
    assert events["vtmarketing"].snapshot["consent"] == "granted"


def test_an_order_created_later_in_the_visit_reads_the_attribution_when_it_turns_paid(
    both_sites,
):
    # given: created unpaid in the visitor's request
    client = qr_visitor("granted")
    order = Order.objects.get(pk=client.get("/checkout/?status=new").json()["order"])
    assert not ConversionEvent.objects.exists()
    # when: paid later, outside any request (a payment webhook)
    order.status = "paid"
    order.save()
    # then
    events = events_by_provider(order)
    assert events["scanova"].snapshot["scan_session_id"] == SCAN
    assert events["vtmarketing"].status == EventStatus.PENDING


def test_a_visitor_without_a_scan_or_consent_leaves_no_attribution(both_sites):
    # when
    Client().get("/checkout/")
    # then
    assert not OrderAttribution.objects.exists()
    assert set(ConversionEvent.objects.values_list("status", flat=True)) == {EventStatus.SKIPPED}


def test_orders_created_outside_a_request_are_not_attributed(both_sites):
    # given: a visitor scanned, but the order is created by a job
    qr_visitor()
    # when
    Order.objects.create(number="JOB-1", status="paid", total=Decimal("5"), email="a@example.com")
    # then
    assert not OrderAttribution.objects.exists()


def test_a_new_orders_attribution_is_one_insert(scanova_site):
    # given
    client = qr_visitor("granted")
    # when
    with CaptureQueriesContext(connection) as queries:
        client.get("/checkout/?status=new")
    # then: no read nor replace of an attribution it can't have yet
    touching = [q["sql"] for q in queries.captured_queries if "orderattribution" in q["sql"]]
    assert len(touching) == 1 and touching[0].startswith("INSERT"), touching


def test_an_attribution_left_by_a_deleted_order_is_replaced_by_the_new_orders(scanova_site):
    # given: an attribution for the primary key the next order gets (its order deleted without
    # it, by a raw delete)
    last = Order.objects.create(number="P-1", status="new")
    stale = OrderAttribution.objects.create(order=Order(pk=last.pk + 1), consent="denied")
    client = qr_visitor("granted")
    # when
    order = Order.objects.get(pk=client.get("/checkout/?status=new").json()["order"])
    # then
    assert order.pk == last.pk + 1
    attribution = OrderAttribution.objects.for_order(order).get()
    assert attribution.pk == stale.pk
    assert (attribution.scan_session_id, attribution.consent) == (SCAN, "granted")


def test_the_consent_stored_on_the_order_wins_over_the_sessions(both_sites):
    # given: the banner said granted, the checkout's own checkbox said denied
    client = qr_visitor("granted")
    order = Order.objects.get(pk=client.get("/checkout/?status=new").json()["order"])
    order.tracking_consent = "denied"
    order.status = "paid"
    # when
    order.save()
    # then
    assert events_by_provider(order)["vtmarketing"].status == EventStatus.SKIPPED
    assert "consent denied" in events_by_provider(order)["vtmarketing"].last_error


def test_a_webhook_attributes_its_order_with_the_visit_carried_in_the_payment(
    both_sites, django_capture_on_commit_callbacks, mocked_http
):
    # given: the visit is carried in the payment's metadata, the order made by a webhook
    carried = json.dumps(qr_visitor("granted").get("/pay/").json())
    order = Order.objects.create(
        number="W-1", status="paid", total=Decimal("20"), email="ana@example.com"
    )
    assert {e.status for e in events_by_provider(order).values()} == {EventStatus.SKIPPED}
    # when
    with django_capture_on_commit_callbacks(execute=True):
        attribution = attribute_order(json.loads(carried), order)
    # then: both events are judged again and become sendable
    assert (attribution.scan_session_id, attribution.consent) == (SCAN, "granted")
    events = events_by_provider(order)
    assert set(events) == {"scanova", "vtmarketing"}
    for event in events.values():
        assert not event.rebuild_before_send
    assert events["scanova"].snapshot["scan_session_id"] == SCAN
    assert events["vtmarketing"].snapshot["consent"] == "granted"
    assert all(e.status != EventStatus.SKIPPED for e in events.values())


def test_without_a_task_backend_the_sweep_sends_what_a_late_attribution_made_eligible(
    both_sites, mocked_http
):
    # given: no delivery after commit; an order paid with no visit, so its events are skipped
    mocked_http.post(re.compile(r"https://.*"), json={"success": True})
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None}):
        order = Order.objects.create(
            number="W-2", status="paid", total=Decimal("20"), email="ana@example.com"
        )
        # when: the webhook attributes it (nothing is read again after that commit) ...
        attribute_order(Visit(scan_session_id=SCAN, consent="granted"), order)
        marked = events_by_provider(order)
        assert {(e.status, e.rebuild_before_send) for e in marked.values()} == {
            (EventStatus.SKIPPED, True)
        }
        # ... and the sweep runs
        _, report = sweep()
    # then: it rebuilt both events from the order and its visit, and sent them
    assert report.delivered == 2
    events = events_by_provider(order)
    assert {(e.status, e.rebuild_before_send) for e in events.values()} == {
        (EventStatus.DELIVERED, False)
    }


def test_attribute_order_takes_the_request_too(both_sites):
    # given
    client = qr_visitor("pending")
    request = client.get("/").wsgi_request
    order = Order.objects.create(number="R-1", status="new", total=Decimal("3"))
    # when
    attribute_order(request, order)
    # then
    assert OrderAttribution.objects.for_order(order).get().consent == "pending"


def test_a_person_skipping_an_event_is_not_undone_by_a_later_attribution(
    scanova_site, django_capture_on_commit_callbacks
):
    # given: an eligible event a person skipped
    order = Order.objects.create(
        number="S-1", status="paid", total=Decimal("3"), scan_session_id=SCAN
    )
    event = ConversionEvent.objects.get()
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.SKIPPED, last_error="skipped by staff"
    )
    # when
    with django_capture_on_commit_callbacks(execute=True):
        attribute_order(Visit(consent="granted"), order)
    # then
    event.refresh_from_db()
    assert (event.status, event.last_error) == (EventStatus.SKIPPED, "skipped by staff")


def test_an_empty_visit_writes_nothing(db):
    order = Order.objects.create(number="E-1")
    assert attribute_order({}, order) is None
    assert not OrderAttribution.objects.exists()


def test_a_malformed_carried_visit_is_refused_with_the_field():
    with pytest.raises(ValueError, match="scan session id"):
        Visit.from_dict({"scan_session_id": "not-a-uuid"})
    with pytest.raises(ValueError, match="consent"):
        Visit.from_dict({"consent": "maybe"})


def test_deleting_the_order_deletes_its_attribution(both_sites):
    order = Order.objects.get(pk=qr_visitor().get("/checkout/?status=new").json()["order"])
    # when
    order.delete()
    # then
    assert not OrderAttribution.objects.exists()


def test_a_subclass_reads_the_attribution_through_the_adapter(both_sites):
    # given: an adapter (as a contrib app would write) that reads the attribution itself
    class Adapter(OrderAdapter):
        def get_scan_session_id(self, order: Any) -> str | None:
            attribution = self.get_attribution(order)
            return attribution.scan_session_id.upper() if attribution else None

    order = Order.objects.get(pk=qr_visitor().get("/checkout/?status=new").json()["order"])
    # then
    assert Adapter().get_scan_session_id(order) == SCAN.upper()
    assert Adapter().get_consent(order) == "granted"


# --- privacy -------------------------------------------------------------------------------


def test_forgetting_the_customer_deletes_the_attribution_of_their_orders(both_sites):
    # given
    order = Order.objects.get(pk=qr_visitor().get("/checkout/").json()["order"])
    other = Order.objects.get(pk=qr_visitor().get("/checkout/?status=new").json()["order"])
    # when
    dry = forget_customer(email="ana@example.com", dry_run=True)
    report = forget_customer(email="ana@example.com")
    # then
    assert dry.attributions == report.attributions == 1
    assert list(OrderAttribution.objects.values_list("order_object_id", flat=True)) == [
        str(other.pk)
    ]
    assert "1 order attributions" in str(report)
    assert not OrderAttribution.objects.for_order(order).exists()


def test_purge_deletes_attributions_older_than_scrub_after_days(both_sites):
    # given
    qr_visitor().get("/checkout/?status=new")
    old = OrderAttribution.objects.get()
    OrderAttribution.objects.filter(pk=old.pk).update(created_at=old.created_at.replace(year=2000))
    qr_visitor().get("/checkout/?status=new")
    # when
    dry = scrub_old_events(dry_run=True)
    report = scrub_old_events()
    # then
    assert dry.attributions == report.attributions == 1
    assert OrderAttribution.objects.count() == 1
    assert not OrderAttribution.objects.filter(pk=old.pk).exists()
