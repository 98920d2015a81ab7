"""Delivery policy: retries, backoff, Retry-After, pauses, holds, give-up, leases."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from decimal import Decimal

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
from django_conversions.signals import event_delivered, event_failed
from tests.conftest import SCANOVA_KEY

SCANOVA_URL = "https://track.example.test/server-events"
BATCH_URL = "https://track.example.test/server-events/batch"
VT_URL = "https://vt.example.test/v1/event/"


def conversions(**extra):
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def record(order_id: str = "1001", **fields) -> list[ConversionEvent]:
    values = {
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
    event_failed.connect(lambda sender, event, reason, **kw: failures.append(reason), weak=False)
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
    event_failed.receivers.clear()


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
    event_delivered.connect(lambda sender, event, **kw: delivered.append(event.pk), weak=False)
    with conversions(BATCH_SIZE=50):
        events = [record(str(n))[0] for n in range(120)]
        report = deliver_due()
    event_delivered.receivers.clear()
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
    assert (report.delivered, report.deferred) == (2, 3)
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
