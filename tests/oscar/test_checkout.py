"""A visitor buys through Oscar's own views (basket, voucher, guest checkout, preview, place
order), with the Django test client: the order reaches both providers with its items, value,
shipping, coupon and customer, and Scanova gets the scan session id of the QR visit it began
with. No checkout code of the shop's: settings alone (tests/oscar/settings.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from django_conversions.contrib.oscar.adapters import OscarOrderAdapter
from django_conversions.models import ConversionEvent, EventStatus, OrderAttribution
from django_conversions.scan_session import remember_consent
from tests.oscar.conftest import SCAN_ID, Catalogue, Order, sent_bodies

VT_URL = "https://vt.example.test/v1/event/"
SCANOVA_URL = "https://track.example.test/server-events"

pytestmark = pytest.mark.django_db


def grant_consent(client: Client) -> None:
    """The storefront's consent banner: the visitor's choice kept in their session."""
    session = client.session
    request: Any = type("Request", (), {"session": session})()
    remember_consent(request, "granted")
    session.save()


def buy_as_guest(client: Client, catalogue: Catalogue, *, voucher: str | None = None) -> Any:
    """Two mugs through Oscar's views, as a guest, to the thank-you page; the placed order."""
    add = client.post(reverse("basket:add", args=[catalogue.mug.pk]), {"quantity": 2})
    assert add.status_code == 302
    if voucher:
        client.post(reverse("basket:vouchers-add"), {"code": voucher})
    gateway = client.post(
        reverse("checkout:index"), {"username": "ana@example.com", "options": "anonymous"}
    )
    assert gateway.status_code == 302, gateway.content[:500]
    address = client.post(
        reverse("checkout:shipping-address"),
        {
            "first_name": "Ana",
            "last_name": "Pop",
            "line1": "Strada Lunga 1",
            "line4": "Cluj-Napoca",
            "postcode": "400000",
            "phone_number": "+40 775 123 123",
        },
    )
    assert address.status_code == 302, address.content[:2000]
    # one shipping method and one payment method: Oscar's views pass on to payment details
    details = client.get(reverse("checkout:shipping-method"), follow=True)
    assert details.redirect_chain[-1][0] == reverse("checkout:payment-details")
    preview = client.post(reverse("checkout:preview"))  # no payment form to fill in
    assert preview.status_code == 200
    assert b"place_order" in preview.content
    placed = client.post(reverse("checkout:preview"), {"action": "place_order"})
    assert placed.status_code == 302, placed.content[:2000]
    assert placed["Location"] == reverse("checkout:thank-you")
    return Order.objects.get()


def test_a_qr_visitor_who_buys_through_oscars_checkout_reaches_both_providers(
    catalogue, scanova_site, vt_site, provider_http, django_capture_on_commit_callbacks
):
    # given a visitor landing from a QR scan, who accepts tracking
    client = Client()
    landing = client.get(reverse("catalogue:index"), {"scnv": SCAN_ID.upper()})
    assert landing.status_code == 200
    grant_consent(client)

    # when they buy two mugs with the voucher through Oscar's checkout
    with django_capture_on_commit_callbacks(execute=True):
        order = buy_as_guest(client, catalogue, voucher="WELCOME10")

    # then Scanova received the order with the visit's scan session id
    scanova = ConversionEvent.objects.get(site=scanova_site)
    assert scanova.status == EventStatus.DELIVERED, scanova.last_error
    [body] = sent_bodies(provider_http, SCANOVA_URL)
    assert body["scan_session_id"] == SCAN_ID
    assert body["consent"] == "granted"
    assert body["conversion_value"] == {
        "amount": float(order.total_incl_tax),
        "currency": "EUR",
    }
    assert body["properties"]["order_id"] == order.number
    assert body["properties"]["product_ids"] == ["MUG-BLUE"]
    assert body["properties"]["coupons"] == ["WELCOME10"]
    assert "email_hash" in body["user_identifiers"]
    # and VTmarketing the confirmation with the buyer
    vt = ConversionEvent.objects.get(site=vt_site)
    assert vt.status == EventStatus.DELIVERED, vt.last_error
    [confirmation] = sent_bodies(provider_http, VT_URL)
    assert confirmation["user"] == {
        "email": "ana@example.com",
        "tel": "+40775123123",
        "firstname": "Ana",
        "lastname": "Pop",
        "country": "RO",
        "city": "Cluj-Napoca",
    }
    generic = confirmation["event"]["confirmation"]["generic"]
    assert generic["orderId"] == order.number
    assert generic["total"] == 18.0  # 2 x 10.00 less 10 %, free shipping
    assert generic["coupons"] == ["WELCOME10"]
    assert generic["currency"] == "EUR"
    assert generic["total_shipping"] == 0
    assert confirmation["event"]["confirmation"]["items"] == [{"id": "MUG-BLUE", "quantity": 2}]
    # the conversion holds the unit price incl. tax as Oscar recorded it (the delivered event
    # itself keeps only the order's totals)
    assert vt.snapshot["currency"] == "EUR"
    [item] = OscarOrderAdapter().to_conversion(order).items
    assert item.price == Decimal("10.00") == order.lines.get().unit_price_incl_tax


def test_a_visitor_without_a_scan_is_skipped_by_scanova_with_the_reason(
    catalogue, scanova_site, provider_http, django_capture_on_commit_callbacks
):
    client = Client()
    client.get(reverse("catalogue:index"))

    with django_capture_on_commit_callbacks(execute=True):
        buy_as_guest(client, catalogue)

    event = ConversionEvent.objects.get(site=scanova_site)
    assert event.status == EventStatus.SKIPPED
    assert event.last_error.startswith("no scan session id")
    assert not provider_http.calls


def test_without_consent_vtmarketing_skips_the_order_and_scanova_omits_the_customer(
    catalogue, scanova_site, vt_site, provider_http, django_capture_on_commit_callbacks
):
    client = Client()
    client.get(reverse("catalogue:index"), {"scnv": SCAN_ID})

    with django_capture_on_commit_callbacks(execute=True):
        buy_as_guest(client, catalogue)

    vt = ConversionEvent.objects.get(site=vt_site)
    assert vt.status == EventStatus.SKIPPED
    assert vt.last_error.startswith("consent")
    [body] = sent_bodies(provider_http, SCANOVA_URL)
    assert body["scan_session_id"] == SCAN_ID
    assert "consent" not in body


def test_an_order_paid_later_keeps_the_visit_it_was_placed_in(
    catalogue, scanova_site, conversions, provider_http, django_capture_on_commit_callbacks
):
    # given a shop that reports orders once they are paid
    with conversions(OSCAR_PAID_STATUSES=["Paid"]):
        client = Client()
        client.get(reverse("catalogue:index"), {"scnv": SCAN_ID})
        order = buy_as_guest(client, catalogue)
        assert not ConversionEvent.objects.exists()

        # when the payment is confirmed later, outside the visitor's request (the dashboard)
        with django_capture_on_commit_callbacks(execute=True):
            order.set_status("Paid")

    # then Scanova still gets the scan session id of the visit the order was placed in
    [body] = sent_bodies(provider_http, SCANOVA_URL)
    assert body["scan_session_id"] == SCAN_ID
    assert body["properties"]["order_status"] == "Paid"


def test_a_deleted_order_takes_its_attribution_with_it(catalogue, scanova_site):
    client = Client()
    client.get(reverse("catalogue:index"), {"scnv": SCAN_ID})
    order = buy_as_guest(client, catalogue)
    assert OrderAttribution.objects.for_order(order).exists()

    order.delete()

    assert not OrderAttribution.objects.exists()
