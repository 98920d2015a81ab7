"""Times in multi-row inserts: one stamp per statement, and each column stores its own time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_conversions import bulk
from django_conversions.models import ConversionEvent, TrackingSite

pytestmark = pytest.mark.django_db


def events(site: TrackingSite, **times: object) -> list[ConversionEvent]:
    return [
        ConversionEvent(site=site, event_name="purchase", dedup_key=f"k{n}", **times)
        for n in range(2)
    ]


def stored(rows: list[ConversionEvent]) -> list[ConversionEvent]:
    return list(ConversionEvent.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk"))


def test_rows_inserted_together_carry_the_given_time_as_their_stamp() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    now = timezone.now() - timedelta(minutes=5)
    rows = bulk.insert(events(site, created_at=now), "default", match_pk_by="event_id", now=now)
    assert [r.updated_at for r in rows] == [now, now]  # auto_now: the statement's time
    assert [(r.created_at, r.updated_at) for r in stored(rows)] == [(now, now), (now, now)]


def test_without_a_time_the_stamp_is_the_time_of_the_insert() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    before = timezone.now()
    rows = bulk.insert(events(site), "default", match_pk_by="event_id")
    after = timezone.now()
    first, second = stored(rows)
    assert before <= first.updated_at <= after
    assert first.updated_at == second.updated_at


def test_one_time_in_several_columns_and_other_times_are_each_stored_as_given() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    now = timezone.now()
    later = now + timedelta(seconds=30)
    shared, own = events(site, created_at=now, next_attempt_at=now)
    own.next_attempt_at = later
    own.delivered_at = now
    bulk.insert([shared, own], "default", match_pk_by="event_id", now=later)
    first, second = stored([shared, own])
    assert (first.created_at, first.next_attempt_at, first.delivered_at) == (now, now, None)
    assert (second.created_at, second.next_attempt_at, second.delivered_at) == (now, later, now)
    assert first.updated_at == second.updated_at == later
