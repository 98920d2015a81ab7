"""Multi-row inserts: what goes in is what the ORM would have written, row by row."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_conversions import bulk
from django_conversions.models import (
    ApiKey,
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


def test_rows_given_as_shared_values_take_defaults_for_what_they_leave_out() -> None:
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    events = [
        ConversionEvent.objects.create(site=site, event_name="purchase", dedup_key=f"k{n}")
        for n in range(3)
    ]
    when = timezone.now()
    # when: two groups of rows, each sharing its values, one row per event named
    bulk.insert_sharing(
        DeliveryAttempt,
        [
            (
                {"created_at": when, "outcome": "delivered", "http_status": 200},
                [e.pk for e in events[:2]],
            ),
            ({"created_at": when, "outcome": "retry", "batch_size": 5}, [events[2].pk]),
            ({"outcome": "failed"}, []),
        ],
        "event_id",
        "default",
    )
    # then
    stored = list(DeliveryAttempt.objects.order_by("pk").values())
    assert [(a["event_id"], a["outcome"], a["http_status"], a["batch_size"]) for a in stored] == [
        (events[0].pk, "delivered", 200, 1),
        (events[1].pk, "delivered", 200, 1),
        (events[2].pk, "retry", None, 5),
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
    updated = bulk.update_pks(ConversionEvent, chosen, {"attempts": 7}, "default")
    nothing = bulk.update_pks(ConversionEvent, [], {"attempts": 9}, "default")
    # then
    assert (updated, nothing) == (3, 0)
    attempts = dict(ConversionEvent.objects.values_list("pk", "attempts"))
    assert attempts == {e.pk: 7 if e.pk in chosen else 0 for e in events}


def test_plain_values_and_values_that_need_preparing_are_both_stored_right() -> None:
    # given: rows mixing text, numbers and None (stored as they are) with values the fields
    # must prepare: an encrypted key (a text field subclass), times, auto_now
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    keys = [
        ApiKey(site=site, label="first", key="sk_live_0123456789"),
        ApiKey(site=site, label="", key="sk_live_abcdefghij", revoked_at=None),
    ]
    site_rows = [TrackingSite(name="t", provider="vtmarketing", rate_window_count=3)]
    # when
    bulk.insert(keys, "default")
    bulk.insert(site_rows, "default")
    # then: the key is stored encrypted and reads back as given
    stored = list(ApiKey.objects.order_by("pk"))
    assert [(k.label, k.key, k.revoked_at) for k in stored] == [
        ("first", "sk_live_0123456789", None),
        ("", "sk_live_abcdefghij", None),
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name('key')} FROM {ApiKey._meta.db_table}")
        raw = [row[0] for row in cursor.fetchall()]
    assert len(raw) == 2 and not any("sk_live" in value for value in raw)
    added = TrackingSite.objects.get(name="t")
    assert added.rate_window_count == 3 and added.updated_at is not None


def test_a_template_runs_as_the_statement_compiled_anew_with_the_same_values() -> None:
    # given: an UPDATE whose time, token and lease change from run to run
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    fields = {
        "now": ConversionEvent._meta.get_field("next_attempt_at"),
        "token": ConversionEvent._meta.get_field("claim_token"),
        "lease": ConversionEvent._meta.get_field("lease_expires_at"),
    }

    def build(values: dict) -> tuple[str, list]:
        queryset = ConversionEvent.objects.filter(site=site, next_attempt_at__lte=values["now"])
        statement = bulk.update_returning_sql(
            queryset,
            {"claim_token": values["token"], "lease_expires_at": values["lease"]},
            ("pk",),
        )
        assert statement is not None
        return statement

    template = bulk.template(build, fields, "default")
    assert template is not None
    now = timezone.now()
    values = {"now": now, "token": uuid.uuid4(), "lease": now + timedelta(minutes=5)}
    # when / then: the same text and parameters as compiling with these values
    assert (template.sql, template.params_for(values, connection)) == build(values)


def test_a_template_is_refused_when_a_value_cannot_be_placed() -> None:
    # given: a statement in which the value never appears among the parameters
    fields = {"now": ConversionEvent._meta.get_field("next_attempt_at")}

    def build(values: dict) -> tuple[str, list]:
        return 'SELECT 1 FROM "django_conversions_conversionevent" WHERE id = %s', [1]

    # when / then
    assert bulk.template(build, fields, "default") is None


def test_values_set_by_primary_key_read_back_as_the_orm_writes_them() -> None:
    # given: an event with a claim, then a flush that ends it and stamps the times
    site = TrackingSite.objects.create(name="s", provider="scanova", provider_site_id="x")
    event = ConversionEvent.objects.create(
        site=site, event_name="purchase", dedup_key="k", claim_token=uuid.uuid4()
    )
    other = ConversionEvent.objects.create(site=site, event_name="purchase", dedup_key="k2")
    when = timezone.now()
    values = {
        "status": "delivered",
        "delivered_at": when,
        "claim_token": None,
        "updated_at": when,
        "last_error": "",
    }
    # when
    bulk.update_pks(ConversionEvent, [event.pk], values, "default")
    ConversionEvent.objects.filter(pk=other.pk).update(**values)
    # then: both rows hold the same values, read back through the ORM
    fields = list(values)
    assert ConversionEvent.objects.filter(pk=event.pk).values(*fields).get() == values
    assert ConversionEvent.objects.filter(pk=other.pk).values(*fields).get() == values
