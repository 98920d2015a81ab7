"""The example shop's flow through the Django test client, under its own settings.

Run by tests/test_example_shop.py (``pytest example_project/shop/tests --ds=demo_site.settings``
with ``example_project`` on the path). The tracking sites point at the provider sandbox served
by ``live_server``, so delivery goes over real HTTP. The shop keeps the default delivery: the
process's background thread sends the events after the order commits, so a test waits for that
thread (``background.wait_idle``) before it looks at what the providers got.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_started
from django.test import Client

from django_conversions.contrib.sandbox import control
from django_conversions.contrib.sandbox.models import SandboxEvent
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.tasks import background
from shop.models import Order, Product

SCAN = str(uuid.uuid4())
# Bounds a wait that should end at once; reaching it fails the test instead of hanging it.
WAIT = 30.0
CUSTOMER = {
    "first_name": "Ana",
    "last_name": "Popescu",
    "email": "ana.popescu@example.com",
    "phone": "0775 123 123",
    "city": "Cluj-Napoca",
    "country": "Romania",
}


@pytest.fixture
def products(transactional_db: Any) -> dict[str, Product]:
    return {
        "MUG": Product.objects.create(sku="MUG", name="Mug", price=Decimal("12.50")),
        "BEANS": Product.objects.create(sku="BEANS", name="Beans", price=Decimal("29.00")),
    }


@pytest.fixture
def sandbox(live_server: Any, transactional_db: Any) -> Iterator[dict[str, TrackingSite]]:
    sites = control.connect_tracking_sites(f"{live_server.url}/sandbox")
    yield {site.provider: site for site in sites}
    # Delivery a test started ends before its database is emptied.
    assert background.wait_idle(timeout=WAIT)


def delivered() -> None:
    """Wait until the process's delivery thread has sent everything handed to it."""
    assert background.wait_idle(timeout=WAIT), "the delivery thread is still busy"


def buy(client: Client, *, consent: bool = True, **customer: str) -> Any:
    client.post("/cart/add/", {"sku": "MUG", "quantity": "2"})
    client.post("/cart/add/", {"sku": "BEANS", "quantity": "1"})
    form = {**CUSTOMER, **customer}
    if consent:
        form["tracking_consent"] = "on"
    return client.post("/checkout/", form, follow=True)


def events_of(order: Order) -> dict[str, ConversionEvent]:
    return {
        e.site.provider: e
        for e in ConversionEvent.objects.filter(order_reference=order.number).select_related("site")
    }


def test_a_visitor_from_a_qr_scan_buys_and_both_providers_get_the_order(client, products, sandbox):
    # given: the visitor lands from a QR code
    landing = client.get("/", {"scnv": SCAN})
    assert "You arrived through a QR code scan" in landing.content.decode()
    # when
    buy(client)
    delivered()
    # then
    order = Order.objects.get()
    assert order.scan_session_id == SCAN
    assert order.status == "paid"
    assert order.tracking_consent == "granted"
    assert order.total == Decimal("54.00")  # 2 x 12.50 + 29.00, free shipping from 50
    events = events_of(order)
    assert events["scanova"].status == EventStatus.DELIVERED
    # delivered: the event keeps the order's totals, not the visitor's scan session
    assert events["scanova"].snapshot["currency"] == "EUR"
    assert "scan_session_id" not in events["scanova"].snapshot
    assert events["vtmarketing"].status == EventStatus.DELIVERED
    received = SandboxEvent.objects.get(provider="scanova")
    assert received.payload["scan_session_id"] == SCAN
    assert received.payload["conversion_value"] == {"amount": 54.0, "currency": "EUR"}
    vt = SandboxEvent.objects.get(provider="vtmarketing").payload
    assert vt["event"]["confirmation"]["items"] == [
        {"id": "MUG", "quantity": 2},
        {"id": "BEANS", "quantity": 1},
    ]
    page = client.get(f"/thanks/{order.number}/").content.decode()
    assert page.count('class="status status-delivered"') == 2
    assert 'class="refresh"' not in page


def test_checkout_answers_before_the_providers_and_a_refresh_shows_their_answers(
    client, products, sandbox
):
    # given: the sandbox's requests are held until the test lets them through
    answer = threading.Event()

    def hold_provider_requests(sender: Any, environ: dict[str, Any], **kwargs: Any) -> None:
        if environ["PATH_INFO"].startswith("/sandbox/"):
            answer.wait(timeout=WAIT)

    request_started.connect(hold_provider_requests)
    try:
        client.get("/", {"scnv": SCAN})
        # when: checkout, while no provider can answer
        thanks = buy(client)
        page = thanks.content.decode()
        answer.set()
        delivered()
        refreshed = client.get(thanks.request["PATH_INFO"]).content.decode()
    finally:
        answer.set()
        request_started.disconnect(hold_provider_requests)
    # then: the order was placed and the page came without waiting for a provider
    order = Order.objects.get()
    assert thanks.status_code == 200
    assert order.number in page
    # both events still waiting for their first answer: no attempt recorded, no reason
    unanswered = re.findall(
        r'class="status status-(?:pending|sending)">\w+</td>\s*<td>0</td><td class="muted"></td>',
        page,
    )
    assert len(unanswered) == 2, page
    assert 'class="refresh"' in page
    # and a refresh after delivery shows both delivered, with nothing left to wait for
    assert refreshed.count('class="status status-delivered"') == 2
    assert 'class="refresh"' not in refreshed
    assert {e.status for e in events_of(order).values()} == {EventStatus.DELIVERED}


def test_without_a_scan_scanova_is_skipped_with_the_reason(client, products, sandbox):
    # when
    buy(client)
    delivered()
    # then
    order = Order.objects.get()
    assert order.scan_session_id == ""
    events = events_of(order)
    assert events["scanova"].status == EventStatus.SKIPPED
    assert "no scan session id" in events["scanova"].last_error
    assert events["vtmarketing"].status == EventStatus.DELIVERED


def test_without_consent_vtmarketing_is_skipped_and_scanova_gets_no_identifiers(
    client, products, sandbox
):
    # given
    client.get("/", {"scnv": SCAN})
    # when
    buy(client, consent=False)
    delivered()
    # then
    order = Order.objects.get()
    assert order.tracking_consent == "denied"
    events = events_of(order)
    assert events["vtmarketing"].status == EventStatus.SKIPPED
    assert "consent denied" in events["vtmarketing"].last_error
    assert events["scanova"].status == EventStatus.DELIVERED
    payload = SandboxEvent.objects.get(provider="scanova").payload
    assert payload["consent"] == "denied"
    assert "user_identifiers" not in payload


def test_a_malformed_scan_link_still_shows_the_shop_and_is_not_used(client, products, sandbox):
    # when
    landing = client.get("/", {"scnv": "not-a-uuid"})
    buy(client)
    # then
    assert landing.status_code == 200
    assert "QR code scan" not in landing.content.decode()
    assert Order.objects.get().scan_session_id == ""


def test_the_thank_you_page_is_only_for_the_buyer(client, products, sandbox):
    # given
    buy(client)
    order = Order.objects.get()
    # when
    stranger = Client().get(f"/thanks/{order.number}/")
    # then
    assert stranger.status_code == 404


def test_checkout_with_an_empty_cart_goes_back_to_the_shop(client, products):
    # when
    response = client.get("/checkout/")
    # then
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_an_invalid_form_places_no_order(client, products):
    # given
    client.post("/cart/add/", {"sku": "MUG", "quantity": "1"})
    # when
    response = client.post("/checkout/", {**CUSTOMER, "email": "not an email"})
    # then
    assert response.status_code == 200
    assert "Enter a valid email address" in response.content.decode()
    assert not Order.objects.exists()


def test_marking_an_order_paid_in_the_admin_reports_it(client, products, sandbox):
    # given: an order placed but not paid yet
    order = Order.objects.create(**CUSTOMER, scan_session_id=SCAN, tracking_consent="granted")
    order.items.create(sku="MUG", name="Mug", price=Decimal("12.50"), quantity=1)
    assert not ConversionEvent.objects.exists()
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    # when
    client.post(
        "/admin/shop/order/",
        {"action": "mark_paid", "_selected_action": [order.pk]},
    )
    delivered()
    # then
    order.refresh_from_db()
    assert order.status == "paid"
    assert {e.status for e in events_of(order).values()} == {EventStatus.DELIVERED}


# --- the product feed and the front-end script (docs/feed.md, docs/frontend.md) -------------


def test_the_feed_lists_the_catalogue_with_the_ids_the_orders_send(client, products, sandbox):
    # given: an order reported to VTmarketing
    buy(client)
    delivered()
    order = Order.objects.get()
    sent = SandboxEvent.objects.get(provider="vtmarketing", order_id=order.number)
    sold = {item["id"] for item in sent.payload["event"]["confirmation"]["items"]}
    # when: the site's product feed, read by an XML parser and by the csv module
    site = sandbox["vtmarketing"]
    xml = client.get(f"/conversions/feed/{site.pk}/products.xml")
    rows = client.get(f"/conversions/feed/{site.pk}/products.csv")
    root = ElementTree.fromstring(b"".join(xml.streaming_content))
    g = "{http://base.google.com/ns/1.0}"
    feed = {item.findtext(f"{g}id"): item for item in root.iter("item")}
    csv_ids = [r["id"] for r in csv.DictReader(io.StringIO(b"".join(rows).decode()))]
    # then: every product, every sold id among them, priced in euros
    assert sold == {"MUG", "BEANS"} and sold <= set(feed)
    assert sorted(csv_ids) == sorted(feed) == ["BEANS", "MUG"]
    assert feed["MUG"].findtext(f"{g}price") == "12.50 EUR"
    assert feed["MUG"].findtext(f"{g}link") == "http://testserver/#MUG"


def test_the_vtmarketing_script_is_on_the_pages_only_with_consent(client, products, sandbox):
    script = f"{sandbox['vtmarketing'].script_url}"
    # no answer yet: the banner asks, no script
    page = client.get("/").content.decode()
    assert "consent-banner" in page and script not in page
    # accepted: the script on every page, with its account id
    client.post("/consent/", {"consent": "granted", "next": "/"})
    page = client.get("/").content.decode()
    assert script in page and 'data-account-id="sandbox-account"' in page
    assert "consent-banner" not in page
    # declined: gone again
    client.post("/consent/", {"consent": "denied", "next": "/"})
    assert script not in client.get("/").content.decode()


def test_the_thank_you_page_gives_the_script_the_order_id_sent(client, products, sandbox):
    page = buy(client).content.decode()
    order = Order.objects.get()
    data = re.search(r'<script id="conversions-order" type="application/json">(.*?)</script>', page)
    assert data is not None and json.loads(data.group(1)) == {"order_id": order.number}
    assert sandbox["vtmarketing"].script_url in page  # the box was ticked: consent granted
    delivered()
    assert SandboxEvent.objects.filter(provider="vtmarketing", order_id=order.number).exists()


def test_the_thank_you_page_names_a_retrying_event_as_the_admin_does(client, products, sandbox):
    # given: Scanova answers the first request with 503, so its event waits for another try
    control.set_fault("scanova", "server_error", status_code=503, times=1)
    client.get("/", {"scnv": SCAN})
    # when
    thanks = buy(client)
    delivered()
    page = client.get(thanks.request["PATH_INFO"]).content.decode()
    # then: "retrying", as in the admin's list, not the stored status "pending"
    order = Order.objects.get()
    event = events_of(order)["scanova"]
    assert event.status == EventStatus.PENDING and event.attempts == 1
    assert re.search(r'class="status status-retrying">retrying</td>\s*<td>1</td>', page), page
    admin_user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin_user)
    events_list = client.get("/admin/django_conversions/conversionevent/").content.decode()
    assert 'class="conversions-badge conversions-retrying">retrying</span>' in events_list
