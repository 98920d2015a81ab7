"""The admin and the example shop in a real browser: Playwright for Python driving Chromium
against ``live_server``, with the provider sandbox mounted in the same server, so the real
provider modules deliver over real HTTP.

Runs under tests.browser.settings in its own pytest process, started by test_browser.py (the
rest of the suite needs another ORDER_MODEL); see docs/browser-tests.md. To run it alone::

    python -m pytest tests/browser/flows.py --ds=tests.browser.settings

``CONVERSIONS_SCREENSHOTS=1`` also rewrites the screenshots under docs/images/.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F
from playwright.sync_api import Browser, Page, expect, sync_playwright
from shop.cart import Line
from shop.checkout import place_order
from shop.management.commands.demo import PRODUCTS
from shop.models import Order, Product

from django_conversions.actions import retry_events
from django_conversions.contrib.sandbox import control
from django_conversions.contrib.sandbox.models import SandboxEvent, SandboxRequest
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    DeliveryAttempt,
    EventResult,
    EventStatus,
    TrackingSite,
)

# Playwright's sync API keeps an event loop running in the test thread, which makes Django
# refuse ORM calls there; those the tests make between page actions are plain synchronous code.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = os.environ.get("CONVERSIONS_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking switches Chromium waits for the network on an offline box.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 800}
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
WRITE_SCREENSHOTS = os.environ.get("CONVERSIONS_SCREENSHOTS", "") == "1"

ADMIN_USER = "admin"
ADMIN_PASSWORD = "browser-test-password"
EVENTS_URL = "/admin/django_conversions/conversionevent/"
SITES_URL = "/admin/django_conversions/trackingsite/"
OVERVIEW_URL = "/admin/django_conversions/conversionevent/overview/"
# A mask is eight bullets and the key's last four characters.
MASK = "\u2022" * 8


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    context = browser.new_context(
        base_url=live_server.url,
        viewport=VIEWPORT,
        color_scheme="light",
        locale="en-GB",
        timezone_id="UTC",
    )
    context.set_default_timeout(15_000)
    # The admin's navigation sidebar open, as Django starts it: our pages must fit beside it.
    context.add_init_script("window.localStorage.setItem('django.admin.navSidebarIsOpen', 'true');")
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser(
        ADMIN_USER, "admin@example.com", ADMIN_PASSWORD
    )


@pytest.fixture
def catalogue(transactional_db: Any) -> list[Product]:
    return [
        Product.objects.create(
            sku=sku, name=name, description=description, price=Decimal(price), emoji=emoji
        )
        for sku, name, description, price, emoji in PRODUCTS
    ]


@pytest.fixture
def sandbox_sites(live_server: Any) -> Iterator[dict[str, TrackingSite]]:
    """One tracking site per provider, sending to the sandbox in this same live server."""
    sites = control.connect_tracking_sites(f"{live_server.url}/sandbox")
    yield {site.provider: site for site in sites}
    control.clear_faults()


# --- helpers -------------------------------------------------------------------------------------


def log_in(page: Page) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", ADMIN_USER)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/$"))


def buy(page: Page, scan_session_id: str, *, product: str = "Classic mug") -> str:
    """Land from a QR scan, put ``product`` in the cart, check out with consent; the order
    number shown on the thank-you page."""
    page.goto(f"/?scnv={scan_session_id}")
    expect(page.get_by_text("You arrived through a QR code scan")).to_be_visible()
    page.locator(".card", has_text=product).get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text(f"Added 1 x {product} to your cart.")).to_be_visible()
    page.get_by_role("link", name="Checkout", exact=True).click()
    page.fill("#id_first_name", "Ana")
    page.fill("#id_last_name", "Popescu")
    page.fill("#id_email", "ana.popescu@example.com")
    page.fill("#id_phone", "0775 123 123")
    page.fill("#id_city", "Cluj-Napoca")
    page.check("#id_tracking_consent")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()
    expect(page.get_by_role("heading", name="Thank you, Ana!")).to_be_visible()
    match = re.search(r"/thanks/([^/]+)/$", page.url)
    assert match, page.url
    return match.group(1)


def event_row(page: Page, order_number: str, site_name: str) -> Any:
    return page.locator("#result_list tbody tr", has_text=order_number).filter(has_text=site_name)


# What sticks out to the right of the window, or is cut off inside a box that scrolls
# sideways (the admin wraps its lists in one): each as "element: how".
OVERFLOW_SCRIPT = """
() => {
  const width = document.documentElement.clientWidth;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
    + [...el.classList].map((c) => '.' + c).join('');
  const found = [];
  if (document.documentElement.scrollWidth > width) {
    found.push(`page: ${document.documentElement.scrollWidth} px wide in a ${width} px window`);
  }
  for (const el of document.body.querySelectorAll('*')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || el.closest('.visually-hidden, [hidden]')) continue;
    if (['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName)) continue;
    const box = el.getBoundingClientRect();
    if (box.width && box.right > width + 1) found.push(`${name(el)}: ends at ${box.right} px`);
    if (['auto', 'scroll', 'hidden', 'clip'].includes(style.overflowX)
        && el.scrollWidth > el.clientWidth + 1) {
      found.push(`${name(el)}: ${el.scrollWidth} px of content in ${el.clientWidth} px`);
    }
  }
  return found.slice(0, 10);
}
"""
# A time as every page of the app's admin shows it: to the second.
TIME_TO_THE_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def assert_fits_beside_the_sidebar(page: Page) -> None:
    """The page at 1280 px with Django's navigation sidebar open: nothing runs off it."""
    expect(page.locator("#nav-sidebar")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#nav-sidebar")).to_be_visible()
    assert page.evaluate(OVERFLOW_SCRIPT) == [], page.url


def times_in(locator: Any) -> list[str]:
    """The times shown in ``locator``, each on one line."""
    texts = locator.locator(".conversions-time").all_inner_texts()
    return [" ".join(text.split()) for text in texts]


def save_screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Rewrite docs/images/<name>.png, only when CONVERSIONS_SCREENSHOTS=1."""
    if not WRITE_SCREENSHOTS:
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"{name}.png"), full_page=full_page, animations="disabled")


# --- 1. a tracking site and its key --------------------------------------------------------------


def test_admin_adds_a_site_with_a_pasted_key_and_shows_only_its_mask(page, live_server, admin_user):
    # given
    account = control.ensure_account("scanova")
    key = account.key
    mask = MASK + key[-4:]
    # when
    log_in(page)
    page.goto(f"{SITES_URL}add/")
    page.fill("#id_name", "Scanova (sandbox)")
    page.select_option("#id_provider", "scanova")
    page.fill("#id_provider_site_id", account.site_id)
    page.fill("#id_endpoint_url", f"{live_server.url}/sandbox/scanova")
    page.fill("#id_api_keys-0-label", "primary")
    page.fill("#id_api_keys-0-key", key)
    page.click("input[name=_continue]")
    # then: saved, the key is stored, and the page shows only its mask
    expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
    site = TrackingSite.objects.get(name="Scanova (sandbox)")
    assert ApiKey.objects.get(site=site).key == key
    expect(page.locator("#api_keys-0 .field-masked_key")).to_have_text(mask)
    assert page.locator("#id_api_keys-0-key").input_value() == ""
    change_html = page.content()
    assert key not in change_html
    assert key[:-4] not in change_html

    # when: the site list
    page.goto(SITES_URL)
    # then
    row = page.locator("#result_list tbody tr", has_text="Scanova (sandbox)")
    expect(row.locator(".field-current_key")).to_have_text(mask)
    expect(row.locator(".field-state")).to_have_text("active")
    assert key not in page.content()
    for url in (f"{SITES_URL}{site.pk}/change/", "/admin/django_conversions/apikey/"):
        assert key not in page.request.get(url).text()

    # when: the pasted key is used for a test event
    page.goto(f"{SITES_URL}{site.pk}/change/")
    page.get_by_role("button", name="Send test event").click()
    # then: the sandbox took it with that key, and the answer shows no key either
    expect(page.locator(".messagelist .success")).to_contain_text("accepted")
    assert SandboxRequest.objects.filter(provider="scanova", status_code=200).count() == 1
    assert key not in page.content()


# --- 2. a QR-scan landing and a purchase, delivered ---------------------------------------------


def test_a_purchase_from_a_scan_landing_is_delivered_and_shown_delivered_in_the_admin(
    page, admin_user, catalogue, sandbox_sites
):
    # given
    scan_session_id = str(uuid.uuid4())
    # when
    number = buy(page, scan_session_id)
    # then: the thank-you page already shows both deliveries (ImmediateBackend)
    expect(page.locator("td.status-delivered")).to_have_count(2)
    order = Order.objects.get(number=number)
    assert order.scan_session_id == scan_session_id
    assert order.tracking_consent == Order.Consent.GRANTED
    received = SandboxEvent.objects.get(provider="scanova", order_id=number)
    assert received.payload["scan_session_id"] == scan_session_id
    assert received.payload["consent"] == "granted"
    assert SandboxEvent.objects.filter(provider="vtmarketing", order_id=number).count() == 1

    # when: the admin's event list
    log_in(page)
    page.goto(EVENTS_URL)
    # then
    for site in sandbox_sites.values():
        row = event_row(page, number, site.name)
        expect(row).to_have_count(1)
        expect(row.locator(".field-state .conversions-badge")).to_have_text("delivered")
        expect(row.locator(".field-state .conversions-attempt-count")).to_have_text("1 attempt")

    # when: the Scanova event's page
    event_row(page, number, "Scanova (sandbox)").locator("th a").click()
    # then: delivered, with the one attempt the sandbox answered
    expect(page.locator(".field-status_badge .readonly")).to_have_text("delivered")
    inline = page.locator(".inline-group", has_text="delivery attempts")
    rows = inline.locator("tbody tr.has_original")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".field-http_status")).to_have_text("200")
    expect(rows.first.locator(".field-outcome")).to_have_text("delivered")
    expect(inline.locator(".field-url").first).to_contain_text("/sandbox/scanova/server-events")
    # and its conversion keeps the order's totals, no longer the customer's scan session
    snapshot = page.locator(".field-snapshot_display")
    expect(snapshot).to_contain_text('"currency": "EUR"')
    expect(snapshot).not_to_contain_text(scan_session_id)


# --- 3. a refusal, its reason, and "retry now" -----------------------------------------------


def test_a_refused_event_shows_its_reason_and_is_delivered_by_retry_now(
    page, admin_user, catalogue, sandbox_sites
):
    # given: Scanova refuses every event (the sandbox's fault switch)
    call_command("conversions_sandbox_fault", "scanova", "reject", "--status", "422")
    number = buy(page, str(uuid.uuid4()), product="Travel mug")
    expect(page.locator("td.status-failed")).to_have_count(1)

    # when: the admin's list of failed events
    log_in(page)
    page.goto(f"{EVENTS_URL}?status=failed")
    # then: the event and why
    row = event_row(page, number, "Scanova (sandbox)")
    expect(row.locator(".field-state .conversions-badge")).to_have_text("failed")
    expect(row.locator(".field-reason")).to_contain_text("422")
    expect(row.locator(".field-reason")).to_contain_text("rejected by the sandbox")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)  # VTmarketing took its copy

    # when: the fault is cleared and the event retried from the list
    call_command("conversions_sandbox_fault", "scanova", "off")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "retry_selected")
    page.get_by_role("button", name="Run").or_(page.get_by_role("button", name="Go")).click()
    # then: queued, not sent by the page
    expect(page.locator(".messagelist")).to_contain_text("1 event queued for delivery")
    event = ConversionEvent.objects.get(order_reference=number, site__provider="scanova")
    assert event.status in (EventStatus.PENDING, EventStatus.SENDING, EventStatus.DELIVERED)

    # when: the worker runs
    call_command("conversions_deliver")
    # then
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert event.attempts == 2
    assert SandboxEvent.objects.filter(provider="scanova", order_id=number).count() == 1

    # when: the event's page
    page.goto(f"{EVENTS_URL}{event.pk}/change/")
    # then: both attempts, newest first
    expect(page.locator(".field-status_badge .readonly")).to_have_text("delivered")
    rows = page.locator(".inline-group", has_text="delivery attempts").locator("tbody tr")
    expect(rows.locator(".field-http_status")).to_have_text(["200", "422"])
    expect(rows.locator(".field-outcome")).to_have_text(["delivered", "failed permanently"])


# --- 4. a week of orders: the overview, and the pages shown in the docs ------------------------

# Orders per day, six days ago first. The last order of each kind below is special.
ORDERS_PER_DAY = (3, 5, 4, 6, 2, 5, 4)
CUSTOMERS = (
    ("Ana", "Popescu"),
    ("Mihai", "Ionescu"),
    ("Elena", "Dumitru"),
    ("Radu", "Stan"),
    ("Ioana", "Marin"),
    ("Andrei", "Pop"),
    ("Maria", "Rusu"),
)
SCAN_NAMESPACE = uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")


def place_week_of_orders() -> dict[str, str]:
    """29 orders over the last seven days, delivered over HTTP to the sandbox; a few of them
    skipped, refused or retrying, each for a reason the admin shows. Returns the numbers of
    the special ones."""
    products = list(Product.objects.order_by("pk"))
    special = {
        "no_scan": "WEB-1004",  # typed the address: Scanova skipped
        "denied": "WEB-1009",  # no consent: VTmarketing skipped
        "bad_email": "WEB-1013",  # VTmarketing answers 400
        "refused_then_retried": "WEB-1027",  # Scanova refused (422), then "retry now"
        "retrying": "WEB-1029",  # Scanova answered 503: retrying
    }
    index = 0
    for days_ago, count in zip(range(6, -1, -1), ORDERS_PER_DAY, strict=True):
        for _ in range(count):
            index += 1
            number = f"WEB-{1000 + index}"
            first, last = CUSTOMERS[index % len(CUSTOMERS)]
            email = f"{first}.{last}@example.com".lower()
            if number == special["bad_email"]:
                email = f"{first.lower()}@localhost"
            if number == special["refused_then_retried"]:
                control.set_fault("scanova", "reject", status_code=422)
            if number == special["retrying"]:
                control.set_fault("scanova", "server_error", status_code=503, times=1)
            lines = [
                Line(products[index % len(products)], 1 + index % 3),
                *([Line(products[(index + 2) % len(products)], 1)] if index % 4 == 0 else []),
            ]
            place_order(
                lines,
                customer={
                    "first_name": first,
                    "last_name": last,
                    "email": email,
                    "phone": "0775 123 123",
                    "city": "Cluj-Napoca",
                    "country": "Romania",
                    "coupon_code": "",
                },
                scan_session_id=None
                if number == special["no_scan"]
                else str(uuid.uuid5(SCAN_NAMESPACE, number)),
                consent=Order.Consent.DENIED
                if number == special["denied"]
                else Order.Consent.GRANTED,
                number=number,
            )
            control.clear_faults()
            if number == special["refused_then_retried"]:
                retry_events(
                    ConversionEvent.objects.filter(order_reference=number, site__provider="scanova")
                )
                call_command("conversions_deliver")
            _move_back(number, timedelta(days=days_ago))
    return special


def _move_back(number: str, delta: timedelta) -> None:
    """Date the order and what it caused ``delta`` earlier (as if placed that day)."""
    if not delta:
        return
    moved = ("created_at", "updated_at", "delivered_at", "next_attempt_at")
    ConversionEvent.objects.filter(order_reference=number).update(
        **{name: F(name) - delta for name in moved}
    )
    carried = EventResult.objects.filter(event__order_reference=number).values("attempt_id")
    DeliveryAttempt.objects.filter(pk__in=carried).update(created_at=F("created_at") - delta)
    Order.objects.filter(number=number).update(
        created_at=F("created_at") - delta, paid_at=F("paid_at") - delta
    )


def test_a_week_of_orders_in_the_overview_and_the_pages_shown_in_the_docs(
    page, admin_user, catalogue, sandbox_sites
):
    # given
    special = place_week_of_orders()
    keys = {site.provider: site.current_key().key for site in sandbox_sites.values()}
    scanova_events = ConversionEvent.objects.filter(site__provider="scanova")
    assert scanova_events.count() == sum(ORDERS_PER_DAY)

    # when: a visitor lands from a QR code and puts a mug in the cart
    page.goto(f"/?scnv={uuid.uuid5(SCAN_NAMESPACE, 'storefront')}")
    page.locator(".card", has_text="Classic mug").get_by_role("button", name="Add to cart").click()
    # then
    expect(page.locator(".card .photo")).to_have_count(len(PRODUCTS))
    expect(page.get_by_text("You arrived through a QR code scan")).to_be_visible()
    expect(page.get_by_role("link", name="Checkout", exact=True)).to_be_visible()
    save_screenshot(page, "storefront", full_page=True)

    # when: the tracking sites
    log_in(page)
    page.goto(SITES_URL)
    # then: each site's key only masked; the counts link to the waiting and failed events
    for provider, site in sandbox_sites.items():
        row = page.locator("#result_list tbody tr", has_text=site.name)
        expect(row.locator(".field-current_key")).to_have_text(MASK + keys[provider][-4:])
    scanova_row = page.locator("#result_list tbody tr", has_text="Scanova (sandbox)")
    expect(scanova_row.locator(".field-retrying_count")).to_have_text("1")
    vt_row = page.locator("#result_list tbody tr", has_text="VTmarketing (sandbox)")
    expect(vt_row.locator(".field-failed_count")).to_have_text("1")
    html = page.content()
    assert not [key for key in keys.values() if key in html]
    assert_fits_beside_the_sidebar(page)
    save_screenshot(page, "admin-sites")

    # when: the events, newest first
    page.goto(EVENTS_URL)
    # then: the waiting, skipped and failed ones with their reasons
    retrying = event_row(page, special["retrying"], "Scanova (sandbox)")
    expect(retrying.locator(".field-state .conversions-badge")).to_have_text("retrying")
    expect(retrying.locator(".conversions-attempt-count")).to_have_text("1 attempt")
    expect(retrying.locator(".field-reason")).to_contain_text("503")
    skipped = event_row(page, special["denied"], "VTmarketing (sandbox)")
    expect(skipped.locator(".field-state .conversions-badge")).to_have_text("skipped")
    expect(skipped.locator(".field-reason")).to_contain_text("consent")
    assert_fits_beside_the_sidebar(page)
    save_screenshot(page, "admin-events")

    # when: the event that was refused, then retried
    event = scanova_events.get(order_reference=special["refused_then_retried"])
    page.goto(f"{EVENTS_URL}{event.pk}/change/")
    # then
    expect(page.locator(".field-status_badge .readonly")).to_have_text("delivered")
    rows = page.locator(".inline-group", has_text="delivery attempts").locator("tbody tr")
    expect(rows.locator(".field-http_status")).to_have_text(["200", "422"])
    assert_fits_beside_the_sidebar(page)
    save_screenshot(page, "admin-event-detail", full_page=True)

    # when: the delivery overview
    page.goto(OVERVIEW_URL)
    # then: what needs attention, and per site a week of counts matching the outbox
    failed = page.locator("#failed-events tbody tr")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text(special["bad_email"])
    expect(failed).to_contain_text("Invalid user email")
    for site in sandbox_sites.values():
        section = page.locator(f"#site-{site.pk}")
        expect(
            section.locator("svg.conversions-chart rect[class^=conversions-bar-]")
        ).not_to_have_count(0)
        per_day = section.locator("tbody tr td:last-child")
        expect(per_day).to_have_text([str(n) for n in ORDERS_PER_DAY])
        expect(section.locator("tfoot td").last).to_have_text(str(sum(ORDERS_PER_DAY)))
    assert_fits_beside_the_sidebar(page)
    save_screenshot(page, "admin-overview", full_page=True)


# --- 5. the provider's front-end script follows the visitor's consent ---------------------------

TRACKER = 'script[src$="/sandbox/vtmarketing/tracker.js"]'


def sandbox_script_runs(page: Page) -> Any:
    """What the sandbox's stand-in script recorded on this page (None: it did not run)."""
    return page.evaluate("window.conversionsSandbox || null")


def test_the_tracking_script_loads_only_once_the_visitor_accepts(page, catalogue, sandbox_sites):
    # given: a visitor who has not answered the consent banner
    page.goto("/")
    expect(page.locator(".consent-banner")).to_be_visible()
    # then: no script on the page, and none ran
    expect(page.locator(TRACKER)).to_have_count(0)
    assert sandbox_script_runs(page) is None
    # when: they accept
    page.locator(".consent-banner").get_by_role("button", name="Accept").click()
    # then: the script is on the page and ran, with the site's account id
    expect(page.locator(".consent-banner")).to_have_count(0)
    expect(page.locator(TRACKER)).to_have_count(1)
    expect(page.locator(".conversions-sandbox-tracker")).to_contain_text("account sandbox-account")
    assert sandbox_script_runs(page) == [
        {"provider": "vtmarketing", "account": "sandbox-account", "order": None}
    ]
    # and on the next page too
    page.locator(".card", has_text="Classic mug").get_by_role("button", name="Add to cart").click()
    expect(page.locator(".conversions-sandbox-tracker")).to_be_visible()


def test_a_declining_visitor_gets_no_script_until_the_checkout_box_grants_it(
    page, catalogue, sandbox_sites
):
    # given: a visitor who declines
    page.goto("/")
    page.locator(".consent-banner").get_by_role("button", name="Decline").click()
    expect(page.locator(".consent-banner")).to_have_count(0)
    # then: no script, on any page
    expect(page.locator(TRACKER)).to_have_count(0)
    page.goto("/?scnv=" + str(uuid.uuid4()))
    expect(page.locator(TRACKER)).to_have_count(0)
    assert sandbox_script_runs(page) is None
    # when: they buy and tick the consent box at checkout
    number = buy(page, str(uuid.uuid4()))
    # then: the thank-you page runs the script, which reads the order id the server sent
    expect(page.locator(".conversions-sandbox-tracker")).to_contain_text(f"order {number}")
    assert sandbox_script_runs(page) == [
        {"provider": "vtmarketing", "account": "sandbox-account", "order": number}
    ]
    expect(page.locator("td.status-delivered")).to_have_count(2)
    assert SandboxEvent.objects.filter(provider="vtmarketing", order_id=number).count() == 1


# --- 5. the admin beside Django's navigation sidebar, at 1280 px ------------------------------

ATTEMPTS_SHOWN = 15
LONG_URL = "/sandbox/scanova/server-events?" + "&".join(f"t{n}=abcdef0123456789" for n in range(8))


def record_retries(event: ConversionEvent, count: int) -> None:
    """``count`` more refused requests for ``event``, one second apart (the newest a second
    before its first real attempt), each with a long URL, bodies and headers."""
    first = event.results.order_by("attempt__created_at").first()
    assert first is not None
    for n in range(1, count + 1):
        attempt = DeliveryAttempt.objects.create(
            site=event.site,
            created_at=first.attempt.created_at - timedelta(seconds=n),
            duration_ms=1200 + n,
            url=first.attempt.url.split("/sandbox/", 1)[0] + LONG_URL,
            http_status=503,
            request_headers={"Content-Type": "application/json", "X-API-Key": MASK + "abcd"},
            request_body=first.attempt.request_body,
            response_headers={"Retry-After": "1"},
            response_body='{"detail": "' + "Service temporarily unavailable. " * 12 + '"}',
            error="HTTP 503: Service temporarily unavailable " * 3,
            outcome="retry",
            event_count=1,
        )
        EventResult.objects.create(
            attempt=attempt, event=event, outcome="retry", message="will retry " * 6
        )


def place_order_refused_once(number: str) -> Order:
    """A QR visitor's consented order of two products, whose first Scanova request the sandbox
    answers with 503 (the fault stays armed until the caller clears it or it is used)."""
    control.set_fault("scanova", "server_error", status_code=503, times=1)
    products = list(Product.objects.order_by("pk"))
    return place_order(
        [Line(products[0], 2), Line(products[1], 1)],
        customer={
            "first_name": "Ana",
            "last_name": "Popescu",
            "email": "ana.popescu@example.com",
            "phone": "0775 123 123",
            "city": "Cluj-Napoca",
            "country": "Romania",
            "coupon_code": "",
        },
        scan_session_id=str(uuid.uuid4()),
        consent=Order.Consent.GRANTED,
        number=number,
    )


def test_the_admin_fits_1280_px_beside_the_navigation_sidebar_with_times_to_the_second(
    page, admin_user, catalogue, sandbox_sites
):
    # given: an order whose Scanova event was refused with 503 and waits for its next try, with
    # a long history of attempts; VTmarketing paused because it refused its key
    order = place_order_refused_once(number="WEB-2001")
    control.clear_faults()
    event = ConversionEvent.objects.get(order_reference=order.number, site__provider="scanova")
    assert event.status == EventStatus.PENDING and event.attempts == 1
    record_retries(event, ATTEMPTS_SHOWN - 1)
    vt = sandbox_sites["vtmarketing"]
    vt.pause("VTmarketing refused the API key: HTTP 401 (invalid credentials for this account)")
    log_in(page)

    # when: the events
    page.goto(EVENTS_URL)
    # then: every column in view, the times to the second
    assert_fits_beside_the_sidebar(page)
    row = event_row(page, order.number, "Scanova (sandbox)")
    expect(row.locator(".field-state .conversions-badge")).to_have_text("retrying")
    for column in ("created", "next_or_delivered"):
        (shown,) = times_in(row.locator(f".field-{column}"))
        assert TIME_TO_THE_SECOND.match(shown), (column, shown)

    # when: the sites
    page.goto(SITES_URL)
    # then: the retrying and failed counts are in view, the paused site says why
    assert_fits_beside_the_sidebar(page)
    scanova_row = page.locator("#result_list tbody tr", has_text="Scanova (sandbox)")
    expect(scanova_row.locator(".field-retrying_count")).to_have_text("1")
    expect(scanova_row.locator(".field-failed_count")).to_be_in_viewport()
    vt_row = page.locator("#result_list tbody tr", has_text="VTmarketing (sandbox)")
    expect(vt_row.locator(".field-state")).to_contain_text("paused")
    expect(vt_row.locator(".field-state")).to_contain_text("HTTP 401")

    # when: the event's page, with its many attempts
    page.goto(f"{EVENTS_URL}{event.pk}/change/")
    # then: the attempts wrap within the page; times one second apart are told apart
    assert_fits_beside_the_sidebar(page)
    attempts = page.locator(".inline-group", has_text="delivery attempts")
    expect(attempts.locator("tbody tr.has_original")).to_have_count(ATTEMPTS_SHOWN)
    shown = times_in(attempts.locator("td.field-time"))
    assert len(shown) == ATTEMPTS_SHOWN
    assert all(TIME_TO_THE_SECOND.match(time) for time in shown), shown
    assert len(set(shown)) == ATTEMPTS_SHOWN, shown  # one second apart, all different
    for field in ("created", "updated", "next_attempt"):
        (value,) = times_in(page.locator(f".field-{field} .readonly"))
        assert TIME_TO_THE_SECOND.match(value), (field, value)
    attempts.locator(".conversions-exchange summary").nth(1).click()  # an older exchange, opened
    expect(attempts.locator(".conversions-exchange .field-url").nth(1)).to_be_visible()
    assert_fits_beside_the_sidebar(page)

    # when: the paused site's page
    page.goto(f"{SITES_URL}{vt.pk}/change/")
    # then: its keys, the blank row for a new key (with no time of its own), its latest requests
    assert_fits_beside_the_sidebar(page)
    (paused_at,) = times_in(page.locator(".field-paused .readonly"))
    assert TIME_TO_THE_SECOND.match(paused_at), paused_at
    (created,) = times_in(page.locator("#api_keys-0 .field-created"))
    assert TIME_TO_THE_SECOND.match(created), created
    expect(page.locator("#api_keys-1 .field-created")).to_have_text("—")
    expect(page.locator("#api_keys-1 .field-last_used")).to_have_text("—")
    requests = times_in(page.locator(".conversions-attempts"))
    assert requests and all(TIME_TO_THE_SECOND.match(time) for time in requests), requests

    # when: the API keys
    page.goto("/admin/django_conversions/apikey/")
    # then
    assert_fits_beside_the_sidebar(page)

    # when: the overview, where the paused site's notice leads to it and resumes it
    page.goto(OVERVIEW_URL)
    # then
    assert_fits_beside_the_sidebar(page)
    notice = page.locator(f"#paused-{vt.pk}")
    expect(notice).to_contain_text("HTTP 401")
    expect(notice.get_by_role("link", name="VTmarketing (sandbox)")).to_have_attribute(
        "href", f"{SITES_URL}{vt.pk}/change/"
    )
    notice.get_by_role("button", name="Resume site").click()
    expect(page).to_have_url(re.compile(re.escape(OVERVIEW_URL) + "$"))
    expect(page.locator(".messagelist")).to_contain_text("Resumed VTmarketing (sandbox)")
    expect(page.locator(f"#paused-{vt.pk}")).to_have_count(0)
    vt.refresh_from_db()
    assert not vt.is_paused


def test_every_list_and_page_of_the_demo_admin_fits_1280_px_beside_the_sidebar(
    page, admin_user, catalogue, sandbox_sites
):
    # given: what `make demo` shows: an order delivered to the sandbox after one 503, so every
    # list of the app, the sandbox and the example shop has a row
    place_order_refused_once(number="WEB-2002")
    log_in(page)
    page.goto("/admin/")
    apps = ("django_conversions", "conversions_sandbox", "shop")
    lists = sorted(
        {
            href
            for app in apps
            for href in page.locator(f".app-{app} th a").evaluate_all("as => as.map(a => a.href)")
        }
    )
    assert len(lists) >= 8, lists
    # when: each list, and the page of its first row
    for url in lists:
        page.goto(url)
        # then
        assert_fits_beside_the_sidebar(page)
        first = page.locator("#result_list tbody tr").first.locator("th a")
        if first.count():
            page.goto(first.get_attribute("href"))
            assert_fits_beside_the_sidebar(page)
