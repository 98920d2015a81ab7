"""What the admin's pages show where: times to the second, the columns of the lists, the blank
API-key row, and the overview's notice of a paused site with its link and resume button. (That
the pages fit 1280 px beside Django's sidebar is checked in a browser: tests/browser.)"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from html import unescape
from typing import Any

from django.urls import reverse
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.models import ApiKey, ConversionEvent, EventStatus, TrackingSite
from tests.attempts import record_attempt


def page_of(client: Any, url: str, **query: Any) -> str:
    response = client.get(url, query)
    assert response.status_code == 200
    return unescape(response.content.decode())


def shown(when: datetime) -> str:
    """A time as the admin's HTML shows it (TIME_ZONE is UTC in the tests)."""
    return when.strftime("%Y-%m-%d</span> <span>%H:%M:%S")


def a_moment_ago() -> datetime:
    return timezone.now().replace(microsecond=0) - timedelta(minutes=5)


def purchase(site: TrackingSite, order_id: str = "WEB-1001") -> ConversionEvent:
    (event,) = track(
        Conversion(
            event_name="purchase",
            order_id=order_id,
            value="10.00",
            currency="EUR",
            consent="granted",
            scan_session_id=str(uuid.uuid4()),
            customer=Customer(email="ana@example.com"),
        ),
        sites=[site],
    )
    return event


def header_labels(page: str) -> list[str]:
    head = page[page.index('<table id="result_list">') :]
    head = head[: head.index("</thead>")]
    return [
        " ".join(re.sub(r"<[^>]+>", " ", label).split())
        for label in re.findall(r'<th scope="col"[^>]*>(.*?)</th>', head, re.DOTALL)
    ]


# --- times to the second ----------------------------------------------------------------------


def test_every_time_on_the_event_pages_carries_seconds(admin_client, scanova_site):
    # given: an event refused, then retried one second later, and due again one second after
    refused_at = a_moment_ago()
    event = purchase(scanova_site)
    ConversionEvent.objects.filter(pk=event.pk).update(
        created_at=refused_at - timedelta(seconds=1),
        attempts=2,
        next_attempt_at=refused_at + timedelta(seconds=2),
        last_error="HTTP 503",
    )
    record_attempt([event], outcome="retry", http_status=503, created_at=refused_at)
    retried_at = refused_at + timedelta(seconds=1)
    record_attempt([event], outcome="retry", http_status=503, created_at=retried_at)
    # when
    listed = page_of(admin_client, reverse("admin:django_conversions_conversionevent_changelist"))
    detail = page_of(
        admin_client, reverse("admin:django_conversions_conversionevent_change", args=[event.pk])
    )
    # then: the list's created and next-try columns, the page's fields and both attempts
    for when in (refused_at - timedelta(seconds=1), refused_at + timedelta(seconds=2)):
        assert shown(when) in listed
        assert shown(when) in detail
    assert shown(refused_at) in detail and shown(retried_at) in detail


def test_every_time_on_the_site_pages_carries_seconds(admin_client, scanova_site):
    # given: a site held back, with a key used a moment ago and a request it answered
    held_until = timezone.now().replace(microsecond=0) + timedelta(minutes=2)
    used_at = a_moment_ago()
    TrackingSite.objects.filter(pk=scanova_site.pk).update(held_until=held_until)
    ApiKey.objects.filter(site=scanova_site).update(last_used_at=used_at)
    event = purchase(scanova_site)
    record_attempt([event], http_status=429, outcome="retry", created_at=used_at)
    key = ApiKey.objects.get(site=scanova_site)
    # when
    listed = page_of(admin_client, reverse("admin:django_conversions_trackingsite_changelist"))
    site_page = reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk])
    change = page_of(admin_client, site_page)
    keys = page_of(admin_client, reverse("admin:django_conversions_apikey_changelist"))
    # then: the hold in the list's state, the page's fields, the key's times, the requests
    assert "held back" in listed and shown(held_until) in listed
    for when in (held_until, used_at, key.created_at.replace(microsecond=0)):
        assert shown(when) in change
    assert shown(used_at) in keys and shown(key.created_at.replace(microsecond=0)) in keys


def test_the_overview_shows_the_times_of_a_pause_and_a_failure_to_the_second(
    admin_client, scanova_site
):
    # given
    failed_at = a_moment_ago()
    event = purchase(scanova_site)
    ConversionEvent.objects.filter(pk=event.pk).update(
        status=EventStatus.FAILED, created_at=failed_at, last_error="HTTP 400"
    )
    scanova_site.pause("HTTP 401: key refused")
    paused_at = TrackingSite.objects.get(pk=scanova_site.pk).paused_at
    assert paused_at is not None
    # when
    page = page_of(admin_client, reverse("admin:django_conversions_overview"))
    # then
    assert shown(failed_at) in page
    assert shown(timezone.localtime(paused_at)) in page


# --- the lists' columns ---------------------------------------------------------------------


def test_the_event_list_puts_name_and_site_under_the_order_and_the_reason_last(
    admin_client, scanova_site
):
    # given
    event = purchase(scanova_site, order_id="WEB-7")
    ConversionEvent.objects.filter(pk=event.pk).update(attempts=2, last_error="HTTP 503: busy")
    # when
    page = page_of(admin_client, reverse("admin:django_conversions_conversionevent_changelist"))
    # then
    assert header_labels(page)[1:] == [
        "Event",
        "Status",
        "Created",
        "Next try / delivered",
        "Reason",
    ]
    row = page[page.index("WEB-7") - 200 :]
    assert re.search(
        r'conversions-reference">WEB-7</span>\s*<span class="conversions-event-site">'
        r"purchase → scanova site</span>",
        row,
    )
    assert re.search(r'retrying</span>\s*<span class="conversions-attempt-count">2 attempts', row)


def test_the_site_list_puts_the_provider_under_the_name_and_the_counts_next(
    admin_client, scanova_site
):
    # when
    page = page_of(admin_client, reverse("admin:django_conversions_trackingsite_changelist"))
    # then
    assert header_labels(page)[1:] == ["Site", "State", "Pending", "Retrying", "Failed", "API key"]
    assert re.search(r'scanova site\s*<span class="conversions-provider">Scanova[^<]*</span>', page)


def test_a_blank_api_key_row_shows_no_time(admin_client, scanova_site):
    # given: a site with one saved key (the form adds a blank row for another)
    key = ApiKey.objects.get(site=scanova_site)
    url = reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk])
    # when
    page = page_of(admin_client, url)
    # then: the saved key has its creation time, the blank row none at all
    saved = page[page.index('id="api_keys-0"') : page.index('id="api_keys-1"')]
    blank = page[page.index('id="api_keys-1"') :]
    blank = blank[: blank.index("</tr>")]
    assert shown(key.created_at.replace(microsecond=0)) in saved
    assert re.search(r'field-created">\s*<p>—</p>', blank), blank
    assert "conversions-time" not in blank


# --- the overview's notice of a paused site ----------------------------------------------------


def test_the_paused_notice_links_to_the_site_and_its_button_resumes_it(admin_client, scanova_site):
    # given
    scanova_site.pause("HTTP 401: key refused")
    overview = reverse("admin:django_conversions_overview")
    change = reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk])
    resume = reverse("admin:django_conversions_trackingsite_resume", args=[scanova_site.pk])
    # when
    page = page_of(admin_client, overview)
    # then
    notice = page[page.index(f'id="paused-{scanova_site.pk}"') :]
    notice = notice[: notice.index("</li>")]
    assert f'<a href="{change}">scanova site</a> is paused since' in notice
    assert f'action="{resume}"' in notice and 'name="next"' in notice

    # when: its button
    response = admin_client.post(resume, {"next": overview})
    # then: back on the overview, the site resumed
    assert response.status_code == 302 and response["Location"] == overview
    assert not TrackingSite.objects.get(pk=scanova_site.pk).is_paused


def test_the_paused_notice_offers_only_what_the_user_may_do(staff_client, scanova_site):
    # given
    scanova_site.pause("HTTP 401: key refused")
    overview = reverse("admin:django_conversions_overview")
    change = reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk])
    resume = reverse("admin:django_conversions_trackingsite_resume", args=[scanova_site.pk])
    events_only = staff_client("view_conversionevent")
    sites_too = staff_client("view_conversionevent", "view_trackingsite")
    # when
    bare = page_of(events_only, overview)
    linked = page_of(sites_too, overview)
    # then: a link for who may see the site, a button for who may change it
    assert "scanova site is paused since" in bare and change not in bare
    assert f'<a href="{change}">scanova site</a>' in linked
    assert resume not in bare and resume not in linked


def test_resume_goes_back_only_to_a_page_of_this_site(admin_client, scanova_site):
    # given
    scanova_site.pause("HTTP 401: key refused")
    resume = reverse("admin:django_conversions_trackingsite_resume", args=[scanova_site.pk])
    change = reverse("admin:django_conversions_trackingsite_change", args=[scanova_site.pk])
    # when
    response = admin_client.post(resume, {"next": "https://elsewhere.example/admin/"})
    # then
    assert response.status_code == 302 and response["Location"] == change
