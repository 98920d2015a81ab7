"""``actions``: retry and resume as the admin and the API ask for them. They change the outbox
and queue the events after commit; they never send anything themselves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import responses
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_conversions.actions import RetryOutcome, resume_site, retry_events, skip_events
from django_conversions.adapters import OrderAdapter
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.outbox import BUILD_FAILED_PREFIX
from tests.attempts import enqueued_ids, kept_tasks
from tests.testapp.models import Order


@pytest.fixture
def queue() -> Iterator[Any]:
    with kept_tasks() as backend:
        yield backend


@pytest.fixture
def no_provider_calls() -> Iterator[responses.RequestsMock]:
    """Any provider request fails (nothing is registered) and is recorded."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def make_event(site: TrackingSite, **fields: Any) -> ConversionEvent:
    order = uuid.uuid4().hex[:8]
    defaults: dict[str, Any] = {
        "event_name": "purchase",
        "dedup_key": f"purchase:order:{order}",
        "order_reference": order,
        "snapshot": {"event_name": "purchase", "order_id": order},
    }
    return ConversionEvent.objects.create(site=site, **{**defaults, **fields})


def held(site: TrackingSite) -> ConversionEvent:
    return make_event(
        site,
        status=EventStatus.SENDING,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() + timedelta(minutes=5),
    )


# --- retry --------------------------------------------------------------------------------


def test_retry_queues_what_may_be_resent_and_refuses_the_rest(
    scanova_site, queue, no_provider_calls, django_capture_on_commit_callbacks
):
    # given
    failed = make_event(scanova_site, status=EventStatus.FAILED, attempts=3, last_error="HTTP 500")
    expired = make_event(
        scanova_site,
        status=EventStatus.SENDING,
        attempts=1,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    delivered = make_event(scanova_site, status=EventStatus.DELIVERED)
    in_flight = held(scanova_site)
    before = timezone.now()
    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = retry_events(ConversionEvent.objects.all())
    # then
    assert sorted(outcome.queued) == sorted([failed.pk, expired.pk])
    assert (outcome.delivered, outcome.in_flight, outcome.rebuild_failed) == (1, 1, 0)
    for event, attempts in ((failed, 3), (expired, 1)):
        event.refresh_from_db()
        assert event.status == EventStatus.PENDING
        assert event.attempts == attempts  # the history of failures is kept
        assert before <= event.next_attempt_at <= timezone.now()
        assert event.claim_token is None and event.lease_expires_at is None
    assert ConversionEvent.objects.get(pk=delivered.pk).status == EventStatus.DELIVERED
    still_held = ConversionEvent.objects.get(pk=in_flight.pk)
    assert (still_held.status, still_held.claim_token) == (
        EventStatus.SENDING,
        in_flight.claim_token,
    )
    assert [sorted(ids) for ids in enqueued_ids(queue)] == [sorted(outcome.queued)]
    assert not no_provider_calls.calls


def test_retry_accepts_events_as_objects_too(scanova_site, queue):
    # given
    event = make_event(scanova_site, status=EventStatus.FAILED)
    # when
    outcome = retry_events([event])
    # then
    assert outcome.queued == [event.pk]


def test_a_delivered_event_is_never_queued_again(
    scanova_site, queue, no_provider_calls, django_capture_on_commit_callbacks
):
    # given: an in-memory copy that still says "failed" (the page was opened before delivery)
    stale = make_event(scanova_site, status=EventStatus.FAILED)
    ConversionEvent.objects.filter(pk=stale.pk).update(status=EventStatus.DELIVERED)
    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = retry_events([stale])
    # then
    assert outcome == RetryOutcome(queued=[], delivered=1)
    assert ConversionEvent.objects.get(pk=stale.pk).status == EventStatus.DELIVERED
    assert queue.results == [] and not no_provider_calls.calls


def test_nothing_is_queued_before_the_transaction_commits(
    scanova_site, queue, django_capture_on_commit_callbacks
):
    # given
    event = make_event(scanova_site, status=EventStatus.FAILED)
    # when
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with transaction.atomic():
            retry_events([event])
        # then: the change is written, the queue not yet told
        assert queue.results == []
    for callback in callbacks:
        callback()
    assert enqueued_ids(queue) == [[event.pk]]


def test_a_large_selection_is_handled_and_queued_in_bounded_chunks(
    scanova_site, queue, monkeypatch, django_capture_on_commit_callbacks
):
    # given
    monkeypatch.setattr("django_conversions.actions.CHUNK_SIZE", 2)
    events = [make_event(scanova_site, status=EventStatus.FAILED) for _ in range(5)]
    # when
    with django_capture_on_commit_callbacks(execute=True):
        outcome = retry_events(ConversionEvent.objects.all())
    # then
    assert sorted(outcome.queued) == sorted(e.pk for e in events)
    assert ConversionEvent.objects.filter(status=EventStatus.PENDING).count() == 5
    assert [len(ids) for ids in enqueued_ids(queue)] == [2, 2, 1]


class ClaimingAdapter(OrderAdapter):
    """Reads the order while a worker claims its event: the race the retry must lose."""

    def to_conversion(self, order: Any) -> Any:
        ConversionEvent.objects.filter(order_reference=order.number).update(
            status=EventStatus.SENDING,
            claim_token=uuid.uuid4(),
            lease_expires_at=timezone.now() + timedelta(minutes=5),
        )
        return super().to_conversion(order)


class BrokenAdapter(OrderAdapter):
    def to_conversion(self, order: Any) -> Any:
        if order.city == "broken":
            raise ValueError("total is not a number")
        return super().to_conversion(order)


def conversions(**extra: Any) -> Any:
    return override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None, **extra})


def paid_order(**fields: Any) -> Order:
    values: dict[str, Any] = {
        "number": "1001",
        "status": "paid",
        "total": Decimal("20.00"),
        "email": "ana@example.com",
        "scan_session_id": str(uuid.uuid4()),
        "tracking_consent": "granted",
    }
    return Order.objects.create(**{**values, **fields})


def test_retry_rebuilds_the_conversion_from_the_fixed_order(scanova_site):
    # given: an event that failed, then the order was corrected
    with conversions():
        order = paid_order()
        event = ConversionEvent.objects.get()
        ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
        Order.objects.filter(pk=order.pk).update(total=Decimal("25.50"))
        # when
        outcome = retry_events([event])
    # then
    event.refresh_from_db()
    assert outcome.queued == [event.pk]
    assert event.status == EventStatus.PENDING
    assert event.snapshot["value"] == "25.50"


def test_an_order_that_can_no_longer_be_built_fails_the_event_with_the_reason(scanova_site):
    # given
    with conversions(ORDER_ADAPTER="tests.test_actions.BrokenAdapter"):
        order = paid_order()
        event = ConversionEvent.objects.get()
        ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
        Order.objects.filter(pk=order.pk).update(city="broken")
        # when
        outcome = retry_events([event])
    # then
    event.refresh_from_db()
    assert (outcome.queued, outcome.rebuild_failed) == ([], 1)
    assert event.status == EventStatus.FAILED
    assert event.last_error.startswith(BUILD_FAILED_PREFIX)
    assert "total is not a number" in event.last_error


def test_a_worker_claiming_the_event_during_the_rebuild_wins(
    scanova_site, queue, django_capture_on_commit_callbacks
):
    # given
    with conversions(ORDER_ADAPTER="tests.test_actions.ClaimingAdapter", TASK_BACKEND="kept"):
        paid_order()
        event = ConversionEvent.objects.get()
        ConversionEvent.objects.filter(pk=event.pk).update(status=EventStatus.FAILED)
        # when
        with django_capture_on_commit_callbacks(execute=True):
            outcome = retry_events([event])
    # then: the worker's claim stands; the retry did not touch the event
    event.refresh_from_db()
    assert (outcome.queued, outcome.in_flight) == ([], 1)
    assert event.status == EventStatus.SENDING and event.claim_token is not None
    assert queue.results == []


def test_the_summary_says_what_happened_to_each_event():
    outcome = RetryOutcome(queued=[1, 2, 3], delivered=1, in_flight=1, rebuild_failed=1)
    assert outcome.summary() == (
        "3 events queued for delivery; 1 already delivered (never resent); "
        "1 being sent right now; 1 could not be rebuilt from its order (marked failed)"
    )
    assert RetryOutcome(queued=[7]).summary() == "1 event queued for delivery"


# --- resume -------------------------------------------------------------------------------


def test_resume_unpauses_and_queues_the_waiting_events_without_sending(
    scanova_site, vt_site, queue, no_provider_calls, django_capture_on_commit_callbacks
):
    # given
    scanova_site.pause("Scanova refused the API key: HTTP 403")
    later = timezone.now() + timedelta(hours=1)
    waiting = [make_event(scanova_site, next_attempt_at=later) for _ in range(2)]
    make_event(scanova_site, status=EventStatus.DELIVERED)
    make_event(vt_site)  # another site's event stays out of it
    # when
    with django_capture_on_commit_callbacks(execute=True):
        queued = resume_site(scanova_site)
    # then
    scanova_site.refresh_from_db()
    assert not scanova_site.is_paused and scanova_site.held_until is None
    assert queued == 2
    for event in waiting:
        event.refresh_from_db()
        assert event.next_attempt_at <= timezone.now()
    assert enqueued_ids(queue) == [sorted(e.pk for e in waiting)]
    assert not no_provider_calls.calls


def test_resume_with_nothing_waiting_queues_nothing(
    scanova_site, queue, django_capture_on_commit_callbacks
):
    # given
    scanova_site.pause("no active API key")
    # when
    with django_capture_on_commit_callbacks(execute=True):
        queued = resume_site(scanova_site)
    # then
    assert queued == 0 and queue.results == []
    assert not TrackingSite.objects.get(pk=scanova_site.pk).is_paused


def test_a_large_backlog_is_queued_in_bounded_tasks(
    scanova_site, queue, monkeypatch, django_capture_on_commit_callbacks
):
    # given
    monkeypatch.setattr("django_conversions.actions.CHUNK_SIZE", 2)
    scanova_site.pause("no active API key")
    waiting = [make_event(scanova_site) for _ in range(5)]
    # when
    with django_capture_on_commit_callbacks(execute=True):
        queued = resume_site(scanova_site)
    # then
    assert queued == 5
    assert [len(ids) for ids in enqueued_ids(queue)] == [2, 2, 1]
    assert sorted(pk for ids in enqueued_ids(queue) for pk in ids) == sorted(e.pk for e in waiting)


# --- skip ---------------------------------------------------------------------------------


def test_skip_stops_what_may_be_stopped_and_leaves_the_rest(scanova_site, monkeypatch):
    # given: more events than one chunk
    monkeypatch.setattr("django_conversions.actions.CHUNK_SIZE", 2)
    failed = make_event(scanova_site, status=EventStatus.FAILED)
    pending = make_event(scanova_site)
    expired = make_event(
        scanova_site,
        status=EventStatus.SENDING,
        claim_token=uuid.uuid4(),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    delivered = make_event(scanova_site, status=EventStatus.DELIVERED)
    skipped = make_event(scanova_site, status=EventStatus.SKIPPED, last_error="consent denied")
    in_flight = held(scanova_site)
    # when
    done = skip_events(ConversionEvent.objects.all(), "skipped by ops in the admin")
    # then
    assert sorted(done) == sorted([failed.pk, pending.pk, expired.pk])
    for event in (failed, pending, expired):
        event.refresh_from_db()
        assert event.status == EventStatus.SKIPPED
        assert event.last_error == "skipped by ops in the admin"
        assert event.claim_token is None and event.lease_expires_at is None
    statuses = dict(ConversionEvent.objects.values_list("pk", "status"))
    assert statuses[delivered.pk] == EventStatus.DELIVERED
    assert statuses[in_flight.pk] == EventStatus.SENDING
    assert ConversionEvent.objects.get(pk=skipped.pk).last_error == "consent denied"
