"""The delivery overview page: per site, events per day and status, with a chart."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_conversions.admin.overview import build_overview
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite

OVERVIEW = "admin:django_conversions_overview"


def add_events(site: TrackingSite, count: int, *, days_ago: int = 0, **fields: Any) -> None:
    created = timezone.now() - timedelta(days=days_ago)
    for _ in range(count):
        ConversionEvent.objects.create(
            site=site,
            event_name="purchase",
            dedup_key=f"purchase:{uuid.uuid4()}",
            order_reference=uuid.uuid4().hex[:6],
            created_at=created,
            **fields,
        )


def page_of(response: Any) -> str:
    return unescape(response.content.decode())


def test_overview_counts_events_per_site_day_and_status(scanova_site, vt_site):
    # given
    add_events(scanova_site, 3, status=EventStatus.DELIVERED)
    add_events(scanova_site, 2, attempts=1)  # retrying
    add_events(scanova_site, 1, days_ago=2, status=EventStatus.FAILED, last_error="HTTP 422")
    add_events(scanova_site, 4, days_ago=10, status=EventStatus.DELIVERED)  # outside the window
    add_events(vt_site, 1, status=EventStatus.SKIPPED)
    # when
    overview = build_overview(days=7)
    # then
    by_site = {item.site.pk: item for item in overview.sites}
    scanova = by_site[scanova_site.pk]
    assert [day.day for day in scanova.days] == overview.days
    assert len(overview.days) == 7 and overview.days[-1] == timezone.localdate()
    assert scanova.days[-1].counts == {"delivered": 3, "retrying": 2}
    assert scanova.days[-3].counts == {"failed": 1}
    assert scanova.total == 6
    assert by_site[vt_site.pk].days[-1].counts == {"skipped": 1}
    assert overview.failed_total == 1


def test_overview_takes_the_same_number_of_queries_for_more_events(scanova_site, vt_site):
    # given
    add_events(scanova_site, 2, status=EventStatus.DELIVERED)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            build_overview(days=7)
        return len(captured)

    few = queries()
    for days_ago in range(7):
        add_events(vt_site, 3, days_ago=days_ago, status=EventStatus.FAILED)
        add_events(scanova_site, 2, days_ago=days_ago, attempts=2)
    # when
    many = queries()
    # then
    assert many == few


def test_overview_page_shows_paused_sites_failed_events_and_a_chart(
    admin_client, scanova_site, vt_site
):
    # given
    vt_site.pause("VTmarketing refused the API key: HTTP 401")
    add_events(scanova_site, 2, status=EventStatus.DELIVERED)
    add_events(scanova_site, 1, days_ago=1, attempts=2, last_error="attempt 2 failed: HTTP 503")
    add_events(
        vt_site, 1, status=EventStatus.FAILED, last_error="HTTP 400: Missing event information"
    )
    # when
    response = admin_client.get(reverse(OVERVIEW))
    # then
    assert response.status_code == 200
    page = page_of(response)
    assert "VTmarketing refused the API key: HTTP 401" in page
    assert "HTTP 400: Missing event information" in page
    assert "1 event failed in this period." in page
    assert "<svg" in page and "<script" not in page.split('id="content-main"')[1]
    assert len(re.findall(r'<rect class="conversions-bar-delivered"', page)) == 1
    assert len(re.findall(r'<rect class="conversions-bar-retrying"', page)) == 1
    assert len(re.findall(r'<rect class="conversions-bar-failed"', page)) == 1
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing loaded from elsewhere


def test_overview_bars_share_one_scale(admin_client, scanova_site, vt_site):
    # given: 4 events on one site today, 1 on the other
    add_events(scanova_site, 4, status=EventStatus.DELIVERED)
    add_events(vt_site, 1, status=EventStatus.DELIVERED)
    # when
    overview = build_overview(days=7)
    # then
    bars = {item.site.pk: item.days[-1].bars[0] for item in overview.sites}
    assert bars[scanova_site.pk].height == pytest.approx(4 * bars[vt_site.pk].height)


def test_overview_with_no_problems_says_so(admin_client, scanova_site):
    # given
    add_events(scanova_site, 1, status=EventStatus.DELIVERED)
    # when
    page = page_of(admin_client.get(reverse(OVERVIEW)))
    # then
    assert "Nothing: no site is paused or held back" in page


def test_overview_masks_personal_data_in_reasons(staff_client, scanova_site):
    # given
    add_events(scanova_site, 1, status=EventStatus.FAILED, last_error="rejected: buyer@example.com")
    # when
    masked = page_of(staff_client("view_conversionevent").get(reverse(OVERVIEW)))
    unmasked = page_of(
        staff_client("view_conversionevent", "view_personal_data").get(reverse(OVERVIEW))
    )
    # then
    assert "buyer@example.com" not in masked and "b•••@example.com" in masked
    assert "buyer@example.com" in unmasked


def test_overview_needs_the_view_permission_on_events(staff_client, client, scanova_site):
    # when
    anonymous = client.get(reverse(OVERVIEW))
    without = staff_client("view_trackingsite").get(reverse(OVERVIEW))
    viewer = staff_client("view_conversionevent").get(reverse(OVERVIEW))
    # then
    assert anonymous.status_code == 302 and reverse("admin:login") in anonymous["Location"]
    assert without.status_code == 403
    assert viewer.status_code == 200


def test_overview_is_linked_from_the_app_index_and_the_changelists(admin_client, staff_client):
    # given
    url = reverse(OVERVIEW)
    # when
    pages = [
        admin_client.get(reverse("admin:app_list", args=["django_conversions"])),
        admin_client.get(reverse("admin:django_conversions_conversionevent_changelist")),
        admin_client.get(reverse("admin:django_conversions_trackingsite_changelist")),
    ]
    sites_only = staff_client("view_trackingsite").get(
        reverse("admin:app_list", args=["django_conversions"])
    )
    # then
    for response in pages:
        assert f'href="{url}"' in page_of(response)
    assert url not in page_of(sites_only)  # no link for those who may not open it
