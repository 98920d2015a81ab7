"""Delivery policy: retries, backoff, Retry-After, pauses, holds, give-up, leases."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
import responses
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from django_conversions import Conversion, Customer, track
from django_conversions.delivery import claim, deliver_due, reserve_requests, retry_delay
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    DeliveryAttempt,
    EventResult,
    EventStatus,
)
from django_conversions.outcomes import Outcome
from django_conversions.signals import event_delivered, event_failed
from tests.conditions import wait_until
from tests.conftest import SCANOVA_KEY

SCANOVA_URL = "https://track.example.test/server-events"
BATCH_URL = "https://track.example.test/server-events/batch"
VT_URL = "https://vt.example.test/v1/event/"


def conversions(**extra):
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def record(order_id: str = "1001", **fields: Any) -> list[ConversionEvent]:
    values: dict[str, Any] = {
        "event_name": "purchase",
        "order_id": order_id,
        "value": Decimal("10.50"),
        "currency": "EUR",
        "scan_session_id": str(uuid.uuid4()),
        "customer": Customer(email="ana@example.com"),
        "consent": "granted",
    }
    values.update(fields)
    return track(Conversion(**values))


def make_due(*events: ConversionEvent) -> None:
    """Time travel: the scheduled retry is now."""
    ConversionEvent.objects.filter(pk__in=[e.pk for e in events]).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def event_ids_sent(calls) -> list[str]:
    return [json.loads(call.request.body)["event_id"] for call in calls]


@pytest.mark.django_db(transaction=True)
def test_500_500_200_is_delivered_with_one_event_id(scanova_site, mocked_http):
    # given
    mocked_http.post(SCANOVA_URL, status=500, json={"detail": "upstream"})
    mocked_http.post(SCANOVA_URL, status=500, json={"detail": "upstream"})
    mocked_http.post(SCANOVA_URL, status=200, json={"success": True})
    with conversions():
        [event] = record()
        # when: three delivery runs, each when the retry is due
        first = deliver_due()
        make_due(event)
        second = deliver_due()
        make_due(event)
        third = deliver_due()
    # then
    assert (first.retrying, second.retrying, third.delivered) == (1, 1, 1)
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
    assert event.attempts == 3
    assert event_ids_sent(mocked_http.calls) == [str(event.event_id)] * 3
    attempts = DeliveryAttempt.objects.filter(results__event=event).order_by("pk")
    outcomes = list(attempts.values_list("http_status", "outcome", "event_count"))
    assert outcomes == [(500, "retry", 1), (500, "retry", 1), (200, "delivered", 1)]


@pytest.mark.django_db(transaction=True)
def test_retry_waits_follow_the_schedule(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, status=503)
    with conversions(RETRY_SCHEDULE=(7, 70)):
        [event] = record()
        before = timezone.now()
        deliver_due()
        event.refresh_from_db()
        assert timedelta(seconds=7) <= event.next_attempt_at - before < timedelta(seconds=9)
        assert "attempt 1 failed: HTTP 503" in event.last_error
        make_due(event)
        before = timezone.now()
        deliver_due()
        event.refresh_from_db()
        assert timedelta(seconds=70) <= event.next_attempt_at - before < timedelta(seconds=72)


def test_backoff_adds_jitter_and_honours_retry_after():
    with override_settings(CONVERSIONS={"RETRY_SCHEDULE": (1, 2, 4), "RETRY_JITTER": 0.5}):
        assert retry_delay(1, rand=lambda: 0.0) == 1
        assert retry_delay(2, rand=lambda: 1.0) == 3  # 2 + 50 %
        assert retry_delay(9, rand=lambda: 0.0) == 4  # the last step repeats
        assert retry_delay(1, retry_after=30, rand=lambda: 0.0) == 30


@pytest.mark.django_db(transaction=True)
def test_429_with_retry_after_holds_the_whole_site(scanova_site, mocked_http):
    # given: two events; the provider rate-limits the first request
    mocked_http.post(
        SCANOVA_URL, status=429, headers={"Retry-After": "120"}, json={"detail": "slow down"}
    )
    with conversions(BATCH_SIZE=1):
        (first,) = record("1")
        (second,) = record("2")
        # when
        report = deliver_due()
    # then: one request only; both wait at least Retry-After; the site is held
    assert len(mocked_http.calls) == 1
    assert report.retrying == 1 and report.deferred == 1
    scanova_site.refresh_from_db()
    assert scanova_site.held_until >= timezone.now() + timedelta(seconds=110)
    for event in (first, second):
        event.refresh_from_db()
        assert event.status == EventStatus.PENDING
    # and nothing is claimed while the hold lasts, even when an event is due
    make_due(first, second)
    with conversions():
        assert len(claim(10)) == 0


@pytest.mark.django_db(transaction=True)
def test_429_as_http_date(scanova_site, mocked_http):
    when = timezone.now() + timedelta(seconds=300)
    mocked_http.post(
        SCANOVA_URL, status=429, headers={"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    )
    with conversions():
        [event] = record()
        deliver_due()
    event.refresh_from_db()
    assert event.next_attempt_at >= when - timedelta(seconds=2)


@pytest.mark.django_db(transaction=True)
def test_401_pauses_the_site_and_a_new_key_resumes_it_with_nothing_lost(scanova_site, mocked_http):
    # given: the key was revoked at the provider
    mocked_http.post(SCANOVA_URL, status=403, json={"detail": "API key revoked"})
    with conversions(BATCH_SIZE=1):
        (first,) = record("1")
        (second,) = record("2")
        # when
        report = deliver_due()
    # then: the site is paused with the reason, the events wait and burned no attempt
    scanova_site.refresh_from_db()
    assert scanova_site.is_paused
    assert "API key revoked" in scanova_site.paused_reason
    assert SCANOVA_KEY not in scanova_site.paused_reason
    assert report.deferred == 2 and len(mocked_http.calls) == 1
    for event in (first, second):
        event.refresh_from_db()
        assert (event.status, event.attempts) == (EventStatus.PENDING, 0)
    with conversions():
        assert deliver_due().handled == 0  # a paused site sends nothing

    # when: a new active key is saved
    mocked_http.replace(responses.POST, SCANOVA_URL, json={"success": True})
    ApiKey.objects.create(site=scanova_site, label="rotated", key="scn_live_new_key_0000000001")
    scanova_site.refresh_from_db()
    assert not scanova_site.is_paused
    with conversions(BATCH_SIZE=1):
        report = deliver_due()
    # then: both are delivered with the new key
    assert report.delivered == 2
    assert mocked_http.calls[-1].request.headers["X-API-Key"] == "scn_live_new_key_0000000001"


@pytest.mark.django_db(transaction=True)
def test_site_without_key_is_paused_with_a_readable_reason(scanova_site, mocked_http):
    ApiKey.objects.filter(site=scanova_site).update(is_active=False)
    with conversions():
        [event] = record()
        deliver_due()
    scanova_site.refresh_from_db()
    assert "no active API key" in scanova_site.paused_reason
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and "site paused" in event.last_error
    assert len(mocked_http.calls) == 0


@pytest.mark.django_db(transaction=True)
def test_deactivated_key_is_never_used_again(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    newer = ApiKey.objects.create(
        site=scanova_site, label="newer", key="scn_live_newer_key_00000002"
    )
    newer.revoke()
    with conversions():
        record()
        deliver_due()
    assert mocked_http.calls[0].request.headers["X-API-Key"] == SCANOVA_KEY


@pytest.mark.django_db(transaction=True)
def test_the_key_sent_with_is_marked_used_and_an_unused_one_is_not(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    # given: an older active key besides the site's current one
    spare = ApiKey.objects.create(site=scanova_site, label="spare", key="scn_live_spare_00000003")
    ApiKey.objects.filter(pk=spare.pk).update(created_at=timezone.now() - timedelta(days=1))
    before = timezone.now()
    with conversions():
        record()
        deliver_due()
    stamps = dict(ApiKey.objects.values_list("label", "last_used_at"))
    assert stamps["spare"] is None
    [used_at] = [when for label, when in stamps.items() if label != "spare"]
    assert used_at is not None and used_at >= before


@pytest.mark.django_db(transaction=True)
def test_permanent_error_fails_with_the_provider_reason_and_signal(scanova_site, mocked_http):
    failures = []

    def on_failed(sender, event, reason, **kw):
        failures.append(reason)

    event_failed.connect(on_failed)
    mocked_http.post(
        SCANOVA_URL,
        status=422,
        json={
            "detail": [
                {"loc": ["body", "currency"], "msg": "must be 3 letters", "type": "value_error"}
            ]
        },
    )
    with conversions():
        [event] = record()
        report = deliver_due()
    event.refresh_from_db()
    assert report.failed == 1 and event.status == EventStatus.FAILED
    assert "HTTP 422" in event.last_error and "currency: must be 3 letters" in event.last_error
    assert failures == [event.last_error]
    event_failed.disconnect(on_failed)  # only ours: the app's own receivers (metrics) stay


@pytest.mark.django_db(transaction=True)
def test_gives_up_after_the_max_age(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, status=500)
    with conversions(RETRY_MAX_AGE=3600, RETRY_SCHEDULE=(7200,)):
        [event] = record()
        deliver_due()
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert event.last_error.startswith("gave up after 1 attempts: HTTP 500")


@pytest.mark.django_db(transaction=True)
def test_connection_error_and_timeout_are_retried(scanova_site, mocked_http):
    import requests

    mocked_http.post(SCANOVA_URL, body=requests.ConnectionError("Connection refused"))
    with conversions():
        [event] = record()
        deliver_due()
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and "Connection refused" in event.last_error
    attempt = DeliveryAttempt.objects.get()
    assert attempt.http_status is None and "Connection refused" in attempt.error


@pytest.mark.django_db(transaction=True)
def test_batch_endpoint_sends_many_events_in_one_request(scanova_site, mocked_http):
    mocked_http.post(BATCH_URL, json={"success": True})
    delivered = []

    def on_delivered(sender, event, **kw):
        delivered.append(event.pk)

    event_delivered.connect(on_delivered)
    with conversions(BATCH_SIZE=50):
        events = [record(str(n))[0] for n in range(120)]
        report = deliver_due()
    event_delivered.disconnect(on_delivered)
    assert report.delivered == 120
    sizes = [len(json.loads(c.request.body)["events"]) for c in mocked_http.calls]
    assert sorted(sizes) == [20, 50, 50]
    assert sorted(delivered) == sorted(e.pk for e in events)
    # one attempt per request, one result row per event it carried
    counts = sorted(DeliveryAttempt.objects.values_list("event_count", flat=True))
    assert counts == [20, 50, 50]
    assert EventResult.objects.filter(outcome="delivered").count() == 120
    assert set(EventResult.objects.values_list("message", flat=True)) == {""}


@pytest.mark.django_db(transaction=True)
def test_expired_lease_returns_events_to_the_sweep(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with conversions(LEASE_SECONDS=60):
        [event] = record()
        # given: a worker claimed it and vanished
        assert [e.pk for e in claim(10).events] == [event.pk]
        assert len(claim(10)) == 0  # the lease protects it
        ConversionEvent.objects.filter(pk=event.pk).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        # when
        report = deliver_due()
    assert report.delivered == 1


@pytest.mark.django_db(transaction=True)
def test_a_claim_takes_expired_leases_first_then_the_oldest_due(scanova_site):
    # given: events in every state
    with conversions():
        names = ("old", "new", "later", "stale", "held", "done")
        events = {name: record(name)[0] for name in names}
    now = timezone.now()
    ago = timedelta(minutes=5)
    ConversionEvent.objects.filter(pk=events["old"].pk).update(next_attempt_at=now - 2 * ago)
    ConversionEvent.objects.filter(pk=events["new"].pk).update(next_attempt_at=now - ago)
    ConversionEvent.objects.filter(pk=events["later"].pk).update(next_attempt_at=now + ago)
    ConversionEvent.objects.filter(pk=events["stale"].pk).update(
        status=EventStatus.SENDING, lease_expires_at=now - ago, next_attempt_at=now
    )
    ConversionEvent.objects.filter(pk=events["held"].pk).update(
        status=EventStatus.SENDING, lease_expires_at=now + ago, next_attempt_at=now - 3 * ago
    )
    ConversionEvent.objects.filter(pk=events["done"].pk).update(
        status=EventStatus.DELIVERED, next_attempt_at=now - 3 * ago
    )
    names = {event.pk: name for name, event in events.items()}
    # when
    first, rest = claim(2).events, claim(10).events
    # then: the crashed worker's event, then by due time; nothing leased, later or finished
    assert {names[e.pk] for e in first} == {"stale", "old"}
    assert [names[e.pk] for e in rest] == ["new"]
    assert {e.status for e in first + rest} == {EventStatus.SENDING}
    assert len({e.claim_token for e in first}) == 1


@pytest.mark.django_db(transaction=True)
def test_a_claim_takes_nothing_another_worker_took_meanwhile(scanova_site):
    """The compare-and-set: rows that stopped being due between read and write stay put."""
    from django.db import connection

    with conversions():
        [event] = record()
    if connection.features.has_select_for_update_skip_locked:
        pytest.skip("PostgreSQL locks the rows it reads instead (SKIP LOCKED)")
    # given: another worker claims the event right before this one's claim statement runs
    raced = []

    def other_worker_first(execute, sql, params, many, context):
        if sql.startswith("UPDATE") and EventStatus.SENDING in (params or ()) and not raced:
            raced.append(True)
            ConversionEvent.objects.filter(pk=event.pk).update(
                status=EventStatus.SENDING, lease_expires_at=timezone.now() + timedelta(minutes=5)
            )
        return execute(sql, params, many, context)

    # when
    with connection.execute_wrapper(other_worker_first):
        claimed = claim(10)
    # then
    assert len(claimed) == 0 and raced == [True]


@pytest.mark.django_db(transaction=True)
def test_rate_budget_taken_by_one_process_is_seen_by_another(scanova_site):
    from django_conversions.delivery import forget_sites

    # given: this process took a block of the budget (more than it needs right now)
    assert reserve_requests(scanova_site, 30, 1) == (1, 0.0)
    scanova_site.refresh_from_db()
    assert scanova_site.rate_window_count == 20
    # when: another process (no leftover of its own) asks
    forget_sites()
    granted, _ = reserve_requests(scanova_site, 30, 50)
    # then: it only gets what the row still has
    assert granted == 10


@pytest.mark.django_db(transaction=True)
def test_rate_budget_is_shared_per_minute_window(scanova_site):
    # given: a budget of 5 requests a minute
    assert reserve_requests(scanova_site, 5, 3) == (3, 0.0)
    # when: another worker asks for more than is left
    granted, _ = reserve_requests(scanova_site, 5, 10)
    # then: it gets the rest, and the next one must wait for the next window
    assert granted == 2
    granted, wait = reserve_requests(scanova_site, 5, 1)
    assert granted == 0 and 0 < wait <= 60


@pytest.mark.django_db(transaction=True)
def test_rate_limit_defers_the_rest_of_the_site(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    from django_conversions.providers.scanova import ScanovaProvider

    with conversions(BATCH_SIZE=1), pytest.MonkeyPatch.context() as patch:
        patch.setattr(ScanovaProvider, "rate_limit_per_minute", 2)
        for n in range(5):
            record(str(n))
        report = deliver_due()
    # Claims take a round of requests at a time: what was claimed and not sent is deferred,
    # the rest was never claimed; all three wait, pending.
    assert report.delivered == 2 and report.deferred <= 3
    assert ConversionEvent.objects.filter(status=EventStatus.PENDING).count() == 3
    assert len(mocked_http.calls) == 2
    scanova_site.refresh_from_db()
    assert scanova_site.held_until > timezone.now()


@pytest.mark.django_db(transaction=True)
def test_insecure_endpoint_pauses_the_site(make_site, mocked_http):
    site = make_site("scanova", endpoint_url="http://track.example.test")
    with conversions():
        record()
    with conversions(ALLOW_INSECURE_ENDPOINTS=False):
        deliver_due()
    site.refresh_from_db()
    assert "http://" in site.paused_reason
    assert len(mocked_http.calls) == 0


@pytest.mark.django_db(transaction=True)
def test_vtmarketing_errors_become_the_reason(vt_site, mocked_http):
    mocked_http.post(
        VT_URL,
        status=400,
        json={
            "errors": [
                {
                    "message": "Missing event information",
                    "description": "Please send event information",
                }
            ]
        },
    )
    with conversions():
        [event] = record()
        deliver_due()
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert "Missing event information" in event.last_error


@pytest.mark.django_db(transaction=True)
def test_unknown_site_id_pauses_the_site_and_loses_nothing(scanova_site, mocked_http):
    # given: Scanova doesn't know the site id the shop configured
    mocked_http.post(SCANOVA_URL, status=400, json={"detail": "site_id not found or inactive"})
    with conversions():
        [event] = record()
        deliver_due()
    # then: the site waits for its setup to be fixed; the event is not failed
    scanova_site.refresh_from_db()
    assert "site_id not found or inactive" in scanova_site.paused_reason
    event.refresh_from_db()
    assert (event.status, event.attempts) == (EventStatus.PENDING, 0)
    # when: the site id is corrected and the site resumed
    mocked_http.replace(responses.POST, SCANOVA_URL, json={"success": True})
    scanova_site.provider_site_id = "site_fixed"
    scanova_site.save()
    scanova_site.resume()
    with conversions():
        report = deliver_due()
    assert report.delivered == 1
    assert json.loads(mocked_http.calls[-1].request.body)["site_id"] == "site_fixed"


@pytest.mark.django_db
def test_the_worker_command_keeps_what_is_loaded_out_of_full_collections(scanova_site):
    import gc

    from django.core.management import call_command

    # when
    with conversions():
        call_command("conversions_deliver", verbosity=0)
    # then: Django and the apps, loaded before the first claim, are frozen for the collector
    assert gc.get_freeze_count() > 0


@pytest.mark.django_db(transaction=True)
def test_a_drain_stops_after_a_claim_that_took_less_than_it_could(
    scanova_site, mocked_http, monkeypatch
):
    # given: two events due, claims of up to 500
    from django_conversions import delivery

    mocked_http.post(SCANOVA_URL, json={"success": True})
    claims: list[int] = []
    real_claim = delivery.claim

    def counted_claim(limit: int, event_ids=None):
        lease = real_claim(limit, event_ids)
        claims.append(len(lease))
        return lease

    monkeypatch.setattr(delivery, "claim", counted_claim)
    with conversions(BATCH_SIZE=1):
        record("1")
        record("2")
        # when
        report = deliver_due()
    # then: one claim took both; nothing was due beyond it, so no second claim
    assert report.delivered == 2
    assert claims == [2]


@pytest.mark.django_db(transaction=True)
def test_a_drain_claims_again_after_a_full_claim(scanova_site, mocked_http):
    # given: three events due, claims of two
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with conversions(BATCH_SIZE=1, CLAIM_BATCH_SIZE=2):
        for order in ("1", "2", "3"):
            record(order)
        # when
        report = deliver_due()
    # then: all three, each sent once
    assert report.delivered == 3
    assert sorted(event_ids_sent(mocked_http.calls)) == sorted(
        str(e.event_id) for e in ConversionEvent.objects.all()
    )


# --- the store on the public ORM --------------------------------------------------------------


@pytest.fixture
def sqlite_variable_limit_999():
    """SQLite as Django 5.2's oldest supported versions ship it: 999 bound variables."""
    import sqlite3

    from django.db import connection
    from django.db.backends.signals import connection_created

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's bound-variable limit")

    def lower_limit(sender, connection, **kwargs):
        connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    connection_created.connect(lower_limit)
    connection.close()  # the next query opens a connection with the limit
    try:
        connection.ensure_connection()
        limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        assert limit == 999
        yield
    finally:
        connection_created.disconnect(lower_limit)
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_100_is_recorded_exactly_with_sqlites_999_variable_limit(
    scanova_site, mocked_http, sqlite_variable_limit_999
):
    # given: 100 events for a site with a batch endpoint
    mocked_http.post(BATCH_URL, json={"success": True})
    with conversions(BATCH_SIZE=100):
        events = [record(str(n))[0] for n in range(100)]
        # when
        report = deliver_due()
    # then: one request, all delivered, one attempt and a result row per event
    assert report.delivered == 100 and len(mocked_http.calls) == 1
    assert ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count() == 100
    attempt = DeliveryAttempt.objects.get()
    assert attempt.event_count == 100 and attempt.http_status == 200
    assert sorted(attempt.results.values_list("event_id", flat=True)) == sorted(
        e.pk for e in events
    )
    # and nothing is due again
    with conversions():
        assert deliver_due().handled == 0


@pytest.mark.django_db(transaction=True)
def test_an_unreadable_snapshot_fails_that_event_only(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with conversions(BATCH_SIZE=1):
        broken, fine = record("1")[0], record("2")[0]
        ConversionEvent.objects.filter(pk=broken.pk).update(snapshot={"value": "not money"})
        report = deliver_due()
    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (report.failed, report.delivered) == (1, 1)
    assert broken.status == EventStatus.FAILED
    assert broken.last_error.startswith("stored conversion unreadable")
    assert broken.attempts == 0  # nothing was sent for it
    assert fine.status == EventStatus.DELIVERED
    assert event_ids_sent(mocked_http.calls) == [str(fine.event_id)]


@pytest.mark.django_db(transaction=True)
def test_a_refused_batch_is_halved_and_each_half_is_one_attempt(scanova_site, mocked_http):
    # given: the provider refuses 100 events at once (413), then takes each half
    mocked_http.post(BATCH_URL, status=413, json={"detail": "payload too large"})
    mocked_http.post(BATCH_URL, json={"success": True})
    mocked_http.post(BATCH_URL, json={"success": True})
    with conversions(BATCH_SIZE=100):
        for n in range(100):
            record(str(n))
        report = deliver_due()
    assert report.delivered == 100
    sizes = [len(json.loads(c.request.body)["events"]) for c in mocked_http.calls]
    assert sizes == [100, 50, 50]
    assert sorted(DeliveryAttempt.objects.values_list("event_count", flat=True)) == [50, 50]


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_in_the_provider_is_a_counted_attempt_until_the_max_age(
    scanova_site, mocked_http, monkeypatch
):
    from django_conversions.providers.scanova import ScanovaProvider

    # given: reading the provider's answer raises what nobody expected
    def explode(self, answer):
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")

    monkeypatch.setattr(ScanovaProvider, "classify", explode)
    mocked_http.post(SCANOVA_URL, status=500, json={"detail": "nested"})
    with conversions(RETRY_SCHEDULE=(60,), RETRY_MAX_AGE=150):
        [event] = record()
        # when: the first run
        before = timezone.now()
        report = deliver_due()
        event.refresh_from_db()
        # then: a counted, backed-off attempt, not "pending, due now, attempts unchanged"
        assert report.retrying == 1
        assert (event.status, event.attempts) == (EventStatus.PENDING, 1)
        assert event.next_attempt_at >= before + timedelta(seconds=60)
        assert "unexpected error: RecursionError" in event.last_error
        assert deliver_due().handled == 0  # not due again at once
        # when: it keeps failing each time it is due
        for _ in range(5):
            # time travel: a minute has passed and the retry is due
            event.refresh_from_db()
            ConversionEvent.objects.filter(pk=event.pk).update(
                created_at=event.created_at - timedelta(seconds=60)
            )
            make_due(event)
            deliver_due()
            event.refresh_from_db()
            if event.status != EventStatus.PENDING:
                break
    # then: it failed for good once RETRY_MAX_AGE was reached
    assert event.status == EventStatus.FAILED
    assert event.last_error.startswith("gave up after")
    assert len(mocked_http.calls) == event.attempts


@pytest.mark.django_db(transaction=True)
def test_signals_are_sent_after_the_results_are_committed(scanova_site, mocked_http):
    import threading

    from django.db import connections

    # given: receivers that look at the event from another connection
    seen: dict[str, str] = {}

    def status_elsewhere(pk: int) -> str:
        found: list[str] = []

        def read() -> None:
            found.append(ConversionEvent.objects.get(pk=pk).status)
            connections.close_all()

        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
        return found[0]

    def on_delivered(sender, event, **kwargs):
        seen["delivered"] = status_elsewhere(event.pk)

    def on_failed(sender, event, reason, **kwargs):
        seen["failed"] = status_elsewhere(event.pk)

    event_delivered.connect(on_delivered)
    event_failed.connect(on_failed)
    mocked_http.post(SCANOVA_URL, json={"success": True})
    mocked_http.post(SCANOVA_URL, status=422, json={"detail": "bad"})
    try:
        with conversions(BATCH_SIZE=1, DELIVERY_CONCURRENCY=1):
            record("1")
            record("2")
            deliver_due()
    finally:
        event_delivered.disconnect(on_delivered)
        event_failed.disconnect(on_failed)
    # then: each receiver saw its event's new state already committed
    assert seen == {"delivered": EventStatus.DELIVERED, "failed": EventStatus.FAILED}


@pytest.mark.django_db(transaction=True)
def test_should_stop_sends_no_new_request_and_hands_the_rest_back(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    asked: list[bool] = []

    def stop_after_two() -> bool:
        asked.append(True)
        return len(asked) > 2

    with conversions(BATCH_SIZE=1, DELIVERY_CONCURRENCY=1):
        for n in range(5):
            record(str(n))
        # when
        report = deliver_due(should_stop=stop_after_two)
    # then: what was sent is recorded; the rest is pending, due, claimed by nobody
    sent = len(mocked_http.calls)
    assert 1 <= sent < 5 and report.delivered == sent
    waiting = ConversionEvent.objects.exclude(status=EventStatus.DELIVERED)
    assert waiting.count() == 5 - sent
    assert set(waiting.values_list("status", "attempts", "claim_token")) == {
        (EventStatus.PENDING, 0, None)
    }
    with conversions(BATCH_SIZE=1):
        assert deliver_due().delivered == 5 - sent


# --- fenced leases ----------------------------------------------------------------------------


def wait_until_expired(lease) -> None:
    """Wait for a (short) lease to run out: only then may another worker take its events."""
    wait_until(lambda: timezone.now() > lease.expires_at)


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_lease_was_taken_over_sends_nothing_and_writes_nothing(
    scanova_site, mocked_http, caplog
):
    from django_conversions.delivery import recorder, sender
    from django_conversions.delivery.policy import Decision, Verdict
    from django_conversions.providers.base import Result

    mocked_http.post(SCANOVA_URL, json={"success": True})
    with conversions(BATCH_SIZE=1, LEASE_SECONDS=1, REQUEST_DEADLINE=0.1):
        events = [record(str(n))[0] for n in range(3)]
        # given: worker A claimed the events, its lease ran out, worker B took them over
        first = claim(10)
        wait_until_expired(first)
        second = claim(10)
        assert sorted(e.pk for e in second.events) == sorted(e.pk for e in events)
        # when: A goes on sending its claim
        report = sender.send(first)
        # then: A sent nothing and changed nothing
        assert len(mocked_http.calls) == 0 and report.handled == 0
        rows = ConversionEvent.objects.filter(pk__in=[e.pk for e in events])
        assert set(rows.values_list("status", "claim_token")) == {
            (EventStatus.SENDING, second.token)
        }
        # when: A writes results for them anyway (an answer that came back too late)
        delivered = Decision(Verdict.DELIVERED, 1, "")
        group = recorder.SiteResults(
            first,
            scanova_site,
            None,
            [recorder.Recorded(e, Result(Outcome.DELIVERED, "ok"), delivered) for e in events],
        )
        assert recorder.write([group]).delivered == 0
        # then: still B's, and the log says why
        assert set(rows.values_list("status", "claim_token")) == {
            (EventStatus.SENDING, second.token)
        }
        assert "taken over by another worker" in caplog.text
        # and B delivers each once
        assert sender.send(second).delivered == 3
    assert sorted(event_ids_sent(mocked_http.calls)) == sorted(str(e.event_id) for e in events)


@pytest.mark.django_db(transaction=True)
def test_a_lease_lost_while_a_request_is_in_flight_overwrites_nothing(scanova_site, mocked_http):
    from django.db import connections

    taken_over = []

    def answer_after_a_takeover(request):
        # the answer takes longer than the lease; another worker takes the event over
        [lease_end] = ConversionEvent.objects.values_list("lease_expires_at", flat=True)
        wait_until_expired(SimpleNamespace(expires_at=lease_end))
        taken_over.append(claim(10))
        connections.close_all()
        return (200, {}, json.dumps({"success": True}))

    mocked_http.add_callback(responses.POST, SCANOVA_URL, callback=answer_after_a_takeover)
    with conversions(BATCH_SIZE=1, LEASE_SECONDS=1):
        [event] = record()
        # when
        report = deliver_due()
    # then: the new holder's claim stands; this worker's answer was not written over it
    [other] = taken_over
    event.refresh_from_db()
    assert report.delivered == 0
    assert (event.status, event.claim_token) == (EventStatus.SENDING, other.token)
    assert event.attempts == 0
    # the exchange itself is on record (the request did go out), nothing about the event
    attempt = DeliveryAttempt.objects.get()
    assert attempt.event_count == 1 and not attempt.results.exists()


# --- accepted answers survive a failed write --------------------------------------------------


def fail_results_write(times: int, fault=None):
    """An execute wrapper failing the write of the events' new states ``times`` times."""
    from django.db import OperationalError

    failed: list[str] = []

    def wrapper(execute, sql, params, many, context):
        if sql.startswith("UPDATE") and "delivered_at" in sql and len(failed) < times:
            failed.append(sql)
            if fault is not None:
                fault()
                return execute(sql, params, many, context)
            raise OperationalError("database is unavailable")
        return execute(sql, params, many, context)

    return wrapper, failed


@pytest.mark.django_db(transaction=True)
def test_accepted_results_survive_a_failed_write(scanova_site, mocked_http):
    from django.db import connection

    mocked_http.post(BATCH_URL, json={"success": True})
    wrapper, failed = fail_results_write(times=1)
    with conversions(BATCH_SIZE=10):
        events = [record(str(n))[0] for n in range(10)]
        # when: the first write of the provider's answer fails
        with connection.execute_wrapper(wrapper):
            report = deliver_due()
    # then: written on the next try; delivered once, never back to pending
    assert len(failed) == 1 and len(mocked_http.calls) == 1
    assert report.delivered == 10
    assert set(ConversionEvent.objects.values_list("status", flat=True)) == {"delivered"}
    assert DeliveryAttempt.objects.count() == 1
    assert EventResult.objects.count() == len(events)


@pytest.mark.django_db(transaction=True)
def test_accepted_results_are_kept_while_the_database_stays_away(
    scanova_site, mocked_http, monkeypatch
):
    from django.db import connection

    from django_conversions.delivery import recorder

    monkeypatch.setattr(recorder, "WRITE_RETRY_DELAYS", (0.0,))
    mocked_http.post(SCANOVA_URL, json={"success": True})
    wrapper, failed = fail_results_write(times=2)
    with conversions(BATCH_SIZE=1):
        [event] = record()
        # when: every try of this run fails
        with connection.execute_wrapper(wrapper):
            first = deliver_due()
        event.refresh_from_db()
        assert len(failed) == 2 and first.delivered == 0
        assert event.status == EventStatus.SENDING  # still claimed: nobody sends it meanwhile
        assert recorder.unwritten_count() == 1
        # when: the next run, the database back
        second = deliver_due()
    # then: the kept answer is written; the event was sent once
    event.refresh_from_db()
    assert second.delivered == 1 and event.status == EventStatus.DELIVERED
    assert len(mocked_http.calls) == 1 and recorder.unwritten_count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_accepted_results_survive_a_dropped_connection(scanova_site, mocked_http):
    import psycopg
    from django.db import connection

    dropped: list[int] = []

    def drop_this_connection() -> None:
        # the server ends this worker's session, as a restart or a network cut does
        db = connection.settings_dict
        pid = connection.connection.info.backend_pid
        dropped.append(pid)
        with psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
        ) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    mocked_http.post(BATCH_URL, json={"success": True})
    wrapper, failed = fail_results_write(times=1, fault=drop_this_connection)
    with conversions(BATCH_SIZE=10):
        for n in range(10):
            record(str(n))
        with connection.execute_wrapper(wrapper):
            report = deliver_due()
    # then: the write went through on a new connection; nothing was sent again
    assert len(failed) == 1 and len(mocked_http.calls) == 1
    assert connection.connection.info.backend_pid not in dropped
    assert report.delivered == 10
    assert set(ConversionEvent.objects.values_list("status", flat=True)) == {"delivered"}
    assert DeliveryAttempt.objects.count() == 1


def test_event_ids_are_time_ordered_uuids():
    from django_conversions.models import new_event_id

    ids = [new_event_id() for _ in range(3)]
    later = new_event_id()
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in [*ids, later])
    assert len(set(ids)) == 3
    # the first 48 bits are the milliseconds: a later id never sorts first
    assert max(i.int >> 80 for i in ids) <= later.int >> 80


@pytest.mark.django_db(transaction=True)
def test_an_event_deleted_while_its_request_is_on_the_wire_leaves_the_others_recorded(
    scanova_site, mocked_http
):
    from django.db import connections

    def answer_after_a_purge(request):
        # staff forget the first customer while the batch is on the wire
        ConversionEvent.objects.filter(pk=gone.pk).delete()
        connections.close_all()
        return (200, {}, json.dumps({"success": True}))

    mocked_http.add_callback(responses.POST, BATCH_URL, callback=answer_after_a_purge)
    with conversions(BATCH_SIZE=2):
        gone, kept = record("1")[0], record("2")[0]
        # when
        report = deliver_due()
    # then: the other event is recorded delivered, with its result row
    kept.refresh_from_db()
    assert kept.status == EventStatus.DELIVERED and report.delivered == 1
    attempt = DeliveryAttempt.objects.get()
    assert attempt.event_count == 2
    assert list(attempt.results.values_list("event_id", flat=True)) == [kept.pk]


@pytest.mark.django_db(transaction=True)
def test_an_answer_holding_nul_characters_is_recorded(scanova_site, mocked_http):
    # given: an answer PostgreSQL text can't hold as it is
    mocked_http.post(SCANOVA_URL, status=500, body="up\x00stream", headers={"X-Trace": "a\x00b"})
    with conversions():
        [event] = record()
        report = deliver_due()
    # then: the attempt is stored and the event retried, never left "sending"
    event.refresh_from_db()
    assert report.retrying == 1 and event.status == EventStatus.PENDING
    attempt = DeliveryAttempt.objects.get()
    assert attempt.response_body == "upstream" and "\x00" not in str(attempt.response_headers)


@pytest.mark.django_db(transaction=True)
def test_an_attempt_the_database_refuses_is_stored_without_the_providers_texts(
    scanova_site, mocked_http
):
    from django.db import DataError, connection

    refused: list[str] = []

    def refuse_attempts(execute, sql, params, many, context):
        if sql.startswith("INSERT") and "deliveryattempt" in sql and len(refused) < 2:
            refused.append(sql)
            raise DataError("invalid byte sequence")
        return execute(sql, params, many, context)

    mocked_http.post(SCANOVA_URL, json={"success": True})
    with conversions():
        [event] = record()
        with connection.execute_wrapper(refuse_attempts):
            report = deliver_due()
    # then: the event's state is written all the same, with the exchange's outline
    event.refresh_from_db()
    assert len(refused) == 2 and report.delivered == 1
    assert event.status == EventStatus.DELIVERED
    attempt = DeliveryAttempt.objects.get()
    assert (attempt.http_status, attempt.response_body) == (200, "")
    assert attempt.error == "the request and the answer could not be stored"
    assert attempt.results.get().event_id == event.pk
