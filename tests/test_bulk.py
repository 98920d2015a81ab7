"""Multi-row inserts: what goes in is what the ORM would have written, row by row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from django_conversions import bulk
from django_conversions.models import (
    ConversionEvent,
    DeliveryAttempt,
    TrackingSite,
    new_event_id,
)

pytestmark = pytest.mark.django_db


def test_rows_sharing_values_and_rows_with_their_own_are_stored_as_given() -> None:
    # given: attempt rows of one batch request share its header dicts and time; one row differs
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    event = ConversionEvent.objects.create(site=site, event_name="purchase", dedup_key="k")
    shared_headers, when = {"X-API-Key": "sc_****"}, timezone.now()
    other_headers, later = {"X-API-Key": "sc_****", "X-Other": "1"}, when + timedelta(seconds=1)

    def row(headers: dict[str, str], created: object, outcome: str) -> DeliveryAttempt:
        return DeliveryAttempt(
            event=event, created_at=created, request_headers=headers, outcome=outcome
        )

    rows = [
        row(shared_headers, when, "delivered"),
        row(shared_headers, when, "failed"),
        row(other_headers, later, "delivered"),
        row(shared_headers, when, "retry"),
    ]
    # when
    bulk.insert(rows, "default")
    # then
    stored = list(DeliveryAttempt.objects.order_by("pk"))
    assert [a.request_headers for a in stored] == [
        shared_headers,
        shared_headers,
        other_headers,
        shared_headers,
    ]
    assert [a.created_at for a in stored] == [when, when, later, when]
    assert [a.outcome for a in stored] == ["delivered", "failed", "delivered", "retry"]


def test_event_ids_are_time_ordered_uuids() -> None:
    ids = [new_event_id() for _ in range(3)]
    later = new_event_id()
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in [*ids, later])
    assert len(set(ids)) == 3
    # the first 48 bits are the milliseconds: a later id never sorts first
    assert max(i.int >> 80 for i in ids) <= later.int >> 80


def test_rows_given_as_values_take_defaults_for_what_they_leave_out() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    event = ConversionEvent.objects.create(site=site, event_name="purchase", dedup_key="k")
    when = timezone.now()
    bulk.insert_values(
        DeliveryAttempt,
        [
            {"event_id": event.pk, "created_at": when, "outcome": "delivered", "http_status": 200},
            {"event_id": event.pk, "created_at": when, "outcome": "retry"},
        ],
        "default",
    )
    stored = list(DeliveryAttempt.objects.order_by("pk").values())
    assert [(a["outcome"], a["http_status"], a["batch_size"]) for a in stored] == [
        ("delivered", 200, 1),
        ("retry", None, 1),
    ]
    assert all(a["request_headers"] == {} and a["created_at"] == when for a in stored)


def test_rows_named_by_primary_key_are_updated_and_no_others() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    events = [
        ConversionEvent.objects.create(site=site, event_name="purchase", dedup_key=f"k{n}")
        for n in range(5)
    ]
    chosen = [events[0].pk, events[3].pk, events[4].pk]
    # when
    updated = bulk.with_pks(ConversionEvent, chosen, "default").update(attempts=7)
    nothing = bulk.with_pks(ConversionEvent, [], "default").update(attempts=9)
    # then
    assert (updated, nothing) == (3, 0)
    attempts = dict(ConversionEvent.objects.values_list("pk", "attempts"))
    assert attempts == {e.pk: 7 if e.pk in chosen else 0 for e in events}
