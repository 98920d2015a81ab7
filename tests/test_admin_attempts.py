"""The event page's delivery attempts (one row per request that carried the event) and a
site's latest requests: what they show, masked for whom, in how many queries."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from html import unescape
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.models import ConversionEvent, TrackingSite
from tests.attempts import SCANOVA_BATCH_URL, record_attempt, scanova_batch_body
from tests.conftest import SCANOVA_KEY


def event_page(client: Any, event: ConversionEvent) -> str:
    url = reverse("admin:django_conversions_conversionevent_change", args=[event.pk])
    response = client.get(url)
    assert response.status_code == 200
    return unescape(response.content.decode())


def site_page(client: Any, site: TrackingSite) -> str:
    url = reverse("admin:django_conversions_trackingsite_change", args=[site.pk])
    response = client.get(url)
    assert response.status_code == 200
    return unescape(response.content.decode())


def cell(row: str, field: str) -> str:
    """The text of the first ``field`` column in ``row`` (the admin's read-only cell)."""
    match = re.search(rf'<td class="field-{field}">\s*<p>(.*?)</p>', row, re.DOTALL)
    assert match, field
    return match.group(1).strip()


def purchase(email: str, phone: str, order_id: str) -> ConversionEvent:
    (event,) = track(
        Conversion(
            event_name="purchase",
            order_id=order_id,
            value="10.00",
            currency="EUR",
            consent="granted",
            scan_session_id=str(uuid.uuid4()),
            customer=Customer(email=email, phone=phone, external_id=f"cust-{order_id}"),
        ),
        sites=list(TrackingSite.objects.filter(provider="scanova")),
    )
    return event


def test_each_request_shows_its_exchange_and_this_events_own_outcome(admin_client, scanova_site):
    # given: a batch request accepted as a whole, this event refused in it
    mine = purchase("ana@example.com", "+40775123123", "1")
    other = purchase("bob@example.org", "+40722000111", "2")
    record_attempt(
        [mine, other],
        url=SCANOVA_BATCH_URL,
        http_status=207,
        duration_ms=314,
        outcome="delivered",
        outcomes={mine.pk: "failed"},
        messages={mine.pk: "scan session expired"},
        request_headers={"X-API-Key": "••••••••1c2d"},
        response_headers={"Content-Type": "application/json"},
        request_body=scanova_batch_body([mine, other]),
        response_body='{"accepted": 1, "rejected": 1}',
    )
    # when
    page = event_page(admin_client, mine)
    # then
    row = page[page.index('id="results-0"') :]
    for shown in (
        SCANOVA_BATCH_URL,
        "207",
        "314",
        "scan session expired",
        "X-API-Key: ••••••••1c2d",
        "Content-Type: application/json",
        '{"accepted": 1, "rejected": 1}',
        str(mine.event_id),
    ):
        assert shown in row, shown
    assert cell(row, "event_count") == "2"
    assert cell(row, "outcome") == "failed permanently"  # this event's, not the request's
    assert cell(row, "http_status") == "207"
    assert SCANOVA_KEY not in page


def test_a_shared_request_shows_no_other_customers_data_without_the_permission(
    staff_client, scanova_site
):
    # given: one request carrying two customers' events, the other one first
    mine = purchase("ana@example.com", "+40775123123", "1")
    other = purchase("bob@example.org", "+40722000111", "2")
    body = scanova_batch_body([other, mine])
    record_attempt(
        [other, mine],
        url=SCANOVA_BATCH_URL,
        http_status=422,
        outcome="failed",
        request_body=body,
        response_body=body,
        error=f"rejected {other.snapshot['customer']['email_sha256']} and bob@example.org",
    )
    viewer = staff_client("view_conversionevent")
    dpo = staff_client("view_conversionevent", "view_personal_data")
    # when
    masked = event_page(viewer, mine)
    unmasked = event_page(dpo, mine)
    # then: the other customer's identifiers appear nowhere; this event's part is there
    for value in other.snapshot["customer"].values():
        assert value not in masked
        assert value[:9] not in masked
    assert "bob@example.org" not in masked and str(other.event_id) not in masked
    assert str(mine.event_id) in masked
    assert mine.snapshot["customer"]["email_sha256"][:8] + "…" in masked
    assert mine.snapshot["customer"]["email_sha256"] not in masked
    assert other.snapshot["customer"]["email_sha256"] in unmasked  # with the permission


def test_the_event_page_reads_its_attempts_in_a_bounded_number_of_queries(
    admin_client, scanova_site, django_assert_max_num_queries
):
    # given: many requests, some shared with other events
    event = purchase("ana@example.com", "+40775123123", "1")
    other = purchase("bob@example.org", "+40722000111", "2")
    now = timezone.now()

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            event_page(admin_client, event)
        return len(queries)

    record_attempt([event], created_at=now - timedelta(minutes=30), outcome="retry")
    with_one = count_queries()
    for minutes in range(25):
        record_attempt([event, other], created_at=now - timedelta(minutes=minutes))
    # when
    with django_assert_max_num_queries(with_one):
        page = event_page(admin_client, event)
    # then
    assert page.count('class="field-event_count"') >= 26


def test_the_site_page_lists_its_latest_requests_masked(staff_client, scanova_site, vt_site):
    # given
    event = purchase("ana@example.com", "+40775123123", "1")
    record_attempt(
        [event],
        http_status=503,
        outcome="retry",
        duration_ms=77,
        error="HTTP 503: ana@example.com " + "a" * 64,
    )
    viewer = staff_client("view_trackingsite")
    # when
    page = site_page(viewer, scanova_site)
    other_site = site_page(viewer, vt_site)
    # then
    assert "Recent requests" in page
    assert "503" in page and "77" in page
    assert "ana@example.com" not in page and "a" * 64 not in page
    assert "a•••@example.com" in page
    assert "503" not in other_site.split("Recent requests", 1)[-1]


def test_a_pause_reason_quoting_a_buyer_is_masked_without_the_permission(
    staff_client, scanova_site
):
    # given: the provider's refusal, kept as the pause reason, quotes a buyer
    scanova_site.pause("Scanova refused the API key: HTTP 403 (last: ana@example.com)")
    viewer = staff_client("view_trackingsite", "view_conversionevent")
    dpo = staff_client("view_trackingsite", "view_conversionevent", "view_personal_data")
    pages = (
        reverse("admin:django_conversions_trackingsite_changelist"),
        reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk]),
        reverse("admin:django_conversions_overview"),
    )
    # when
    masked = [unescape(viewer.get(url).content.decode()) for url in pages]
    unmasked = [unescape(dpo.get(url).content.decode()) for url in pages]
    # then
    for page in masked:
        assert "ana@example.com" not in page
        assert "HTTP 403 (last: a•••@example.com)" in page
    for page in unmasked:
        assert "HTTP 403 (last: ana@example.com)" in page
