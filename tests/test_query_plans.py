"""The outbox's indexes serve the queries that run often, on SQLite's planner (the default
database of a small shop): no full scan of the events table where a few rows are wanted."""

from __future__ import annotations

import pytest
from django.db import connection

from django_conversions.admin.sites import _count_of
from django_conversions.delivery import _Marking
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.outbox import _existing_sql

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "sqlite", reason="checks SQLite's query plans"),
]

FULL_SCAN = "SCAN django_conversions_conversionevent"


def plan(sql: str, params: list | tuple) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(row[-1] for row in cursor.fetchall())


def test_the_checkouts_lookup_is_a_probe_of_the_dedup_index(scanova_site, vt_site) -> None:
    sql = _existing_sql("default", 2, 1)
    found = plan(sql, [scanova_site.pk, vt_site.pk, "purchase:order:1"])
    assert "USING COVERING INDEX" in found and FULL_SCAN not in found


def test_a_claim_reads_due_events_in_the_status_index(scanova_site) -> None:
    from django.utils import timezone

    marking = _Marking("default", "due", 500, False, None)
    sql, params = marking.queryset({"now": timezone.now()}).query.sql_with_params()
    found = plan(sql, params)
    assert "conversions_event_due" in found and FULL_SCAN not in found


def test_the_sites_list_counts_pending_and_failed_events_from_the_status_index(
    scanova_site,
) -> None:
    sites = TrackingSite.objects.annotate(
        pending=_count_of(status=EventStatus.PENDING, attempts=0),
        failed=_count_of(status=EventStatus.FAILED),
    )
    found = plan(*sites.query.sql_with_params())
    assert found.count("USING INDEX conversions_event_due (status=?)") == 2
    assert FULL_SCAN not in found


def test_resuming_a_site_finds_its_waiting_events_in_the_status_index(scanova_site) -> None:
    waiting = ConversionEvent.objects.filter(site=scanova_site, status=EventStatus.PENDING)
    found = plan(*waiting.query.sql_with_params())
    assert "conversions_event_due" in found and FULL_SCAN not in found
