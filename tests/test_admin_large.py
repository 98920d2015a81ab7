"""The event lists stay fast on a production-size outbox: on PostgreSQL with 100k events, every
query a view of the admin's list or a page of the API's runs (plain, filtered, searched) reads a
bounded number of the events table's rows, checked with EXPLAIN ANALYZE of the statements the
page really sent.

Django's defaults read the whole table on each view (the paginator's count, the event-name
filter's DISTINCT, the date drill-down, icontains searches): at tens of millions of rows a
page took minutes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_conversions.models import ConversionEvent, TrackingSite
from django_conversions.pagination import COUNT_LIMIT
from tests.test_api_support import EVENTS as API_EVENTS
from tests.test_api_support import logged_in, make_user
from tests.test_query_plans import nodes

EVENTS = 100_000
TABLE = ConversionEvent._meta.db_table
#: Rows one statement may read: the capped count's, and a page's worth on top.
MOST_ROWS_READ = COUNT_LIMIT + 1 + 1_000

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def large_outbox(make_site: Any) -> tuple[TrackingSite, ConversionEvent]:
    """EVENTS events of one site, 30 s apart up to now (about 35 days), one in 1,000 failed.
    Written by one INSERT ... SELECT: building them as objects took most of the test's time."""
    site = make_site("scanova")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (
                site_id, event_id, event_name, dedup_key, order_reference, status, attempts,
                next_attempt_at, last_error, snapshot, source_object_id, created_at, updated_at,
                rebuild_before_send
            )
            SELECT %s, gen_random_uuid(), 'purchase', 'purchase:order:L-' || n, 'L-' || n,
                CASE WHEN n %% 1000 = 0 THEN 'failed' ELSE 'delivered' END, 1, now(), '',
                '{{"value": "1.00", "currency": "EUR"}}'::jsonb, '',
                now() - (%s - n) * interval '30 seconds', now(), false
            FROM generate_series(0, %s - 1) AS n
            """,
            [site.pk, EVENTS, EVENTS],
        )
        cursor.execute(f"ANALYZE {TABLE}")
    return site, ConversionEvent.objects.get(order_reference="L-4242")


def rows_read(sql: str) -> int:
    """The events table's rows a statement read, as EXPLAIN ANALYZE counts them."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        [(found,)] = cursor.fetchall()
    data = json.loads(found) if isinstance(found, str) else found
    total = 0
    for node in nodes(data[0]["Plan"]):
        on_events = node.get("Relation Name") == TABLE or node["Node Type"] == "Bitmap Index Scan"
        if on_events:
            read = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
            total += read * node.get("Actual Loops", 1)
    return total


def test_every_view_of_the_event_list_reads_a_bounded_number_of_rows(admin_client, large_outbox):
    site, wanted = large_outbox
    url = reverse("admin:django_conversions_conversionevent_changelist")
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    views: list[tuple[dict[str, str], int | None]] = [
        ({}, None),
        ({"status": "failed"}, EVENTS // 1000),
        ({"status": "pending"}, 0),
        ({"site__id__exact": str(site.pk)}, None),
        ({"event_name": "purchase"}, None),
        ({"created_at__gte": week_ago}, None),
        ({"q": "L-4242"}, 1),
        ({"q": str(wanted.event_id)}, 1),
        ({"q": "purchase:order:L-4242"}, 1),
        ({"q": "no-such-order"}, 0),
    ]
    for query, expected in views:
        # when: the page is viewed
        with CaptureQueriesContext(connection) as captured:
            response = admin_client.get(url, query)
        # then: it shows what matches
        assert response.status_code == 200, query
        changelist = response.context["cl"]
        if expected is not None:
            assert changelist.result_count == expected, query
        else:
            assert changelist.paginator.capped, query
            assert "the list counts no further" in response.content.decode()
        # and: no statement it sent read the table beyond the count's limit
        statements = [
            q["sql"]
            for q in captured.captured_queries
            if TABLE in q["sql"] and "SELECT" in q["sql"]
        ]
        assert statements, query
        for sql in statements:
            assert rows_read(sql) <= MOST_ROWS_READ, (query, sql[:300])


def statements_on_events(name: str, admin_client: Any, *args: Any) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(reverse(name, args=args))
    assert response.status_code == 200
    found = [
        q["sql"] for q in captured.captured_queries if TABLE in q["sql"] and "SELECT" in q["sql"]
    ]
    assert found
    return found


def test_the_sites_pages_and_an_events_page_read_a_bounded_number_of_rows(
    admin_client, large_outbox
):
    site, event = large_outbox
    for name, args in (
        ("admin:django_conversions_trackingsite_changelist", ()),
        ("admin:django_conversions_trackingsite_change", (site.pk,)),
        ("admin:django_conversions_conversionevent_change", (event.pk,)),
    ):
        for sql in statements_on_events(name, admin_client, *args):
            assert rows_read(sql) <= MOST_ROWS_READ, (name, sql[:300])


def test_the_overview_reads_only_its_weeks_events(admin_client, large_outbox):
    # The overview counts the last 7 days' events per day and state: its work grows with a
    # week's events, never with what the outbox keeps beyond.
    week = ConversionEvent.objects.filter(created_at__gte=timezone.now() - timedelta(days=8))
    bound = week.count() + 1_000
    assert bound < EVENTS // 2  # the fixture keeps far more than a week
    for sql in statements_on_events("admin:django_conversions_overview", admin_client):
        assert rows_read(sql) <= bound, sql[:300]


def test_the_apis_event_list_counts_up_to_its_limit_and_reads_no_more(large_outbox):
    client = logged_in(make_user("viewer", perms=("view_conversionevent",)))
    for query, count, exact in (
        ({}, COUNT_LIMIT, False),
        ({"status": "failed"}, EVENTS // 1000, True),
        ({"order_id": "L-4242"}, 1, True),
    ):
        # when
        with CaptureQueriesContext(connection) as captured:
            response = client.get(API_EVENTS, query)
        # then: the count stops at the limit and says so
        assert response.status_code == 200, query
        answer = response.json()
        assert (answer["count"], answer["count_exact"]) == (count, exact), query
        assert len(answer["results"]) == min(count, 50)
        # and: no statement read the table beyond it
        statements = [
            q["sql"]
            for q in captured.captured_queries
            if TABLE in q["sql"] and "SELECT" in q["sql"]
        ]
        for sql in statements:
            assert rows_read(sql) <= MOST_ROWS_READ, (query, sql[:300])
