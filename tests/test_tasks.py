"""Triggering: Django Tasks after commit (immediate, database worker) and retries deferred."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from django_conversions import Conversion, track
from django_conversions.models import ConversionEvent, EventStatus
from django_conversions.tasks import schedule_retries

SCANOVA_URL = "https://track.example.test/server-events"
DB_BACKEND = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def conversion(order_id: str = "T-1") -> Conversion:
    return Conversion(
        event_name="purchase",
        order_id=order_id,
        value=Decimal("12.00"),
        currency="EUR",
        scan_session_id=str(uuid.uuid4()),
    )


def db_tasks():
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects


@pytest.mark.django_db(transaction=True)
def test_immediate_backend_delivers_right_after_commit(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with transaction.atomic():
        [event] = track(conversion())
        assert len(mocked_http.calls) == 0  # nothing leaves before commit
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED


@pytest.mark.django_db(transaction=True)
def test_immediate_backend_never_raises_to_the_caller(scanova_site, mocked_http):
    # given: the provider is down
    mocked_http.post(SCANOVA_URL, status=503)
    # when
    [event] = track(conversion())
    # then: the caller got its event back; the event waits for a retry
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and event.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_database_worker_delivers_and_defers_retries(scanova_site, mocked_http):
    # TASKS is re-read on setting_changed, by Django 6 and by the backport alike. A minute's
    # wait keeps the retry out of the first worker run however slow the machine.
    retry_in_a_minute = {**settings.CONVERSIONS, "RETRY_SCHEDULE": (60,)}
    with override_settings(TASKS=DB_BACKEND, CONVERSIONS=retry_in_a_minute):
        # given: the provider fails once, then accepts
        mocked_http.post(SCANOVA_URL, status=500)
        mocked_http.post(SCANOVA_URL, json={"success": True})
        [event] = track(conversion())
        # then: the save only enqueued a task
        assert len(mocked_http.calls) == 0
        assert db_tasks().count() == 1
        # when: the database worker runs it
        call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
        event.refresh_from_db()
        assert event.status == EventStatus.PENDING and event.attempts == 1
        # then: the retry was enqueued for when it is due
        retry = db_tasks().order_by("-enqueued_at").first()
        assert retry.run_after is not None
        assert abs((retry.run_after - event.next_attempt_at).total_seconds()) < 1
        # when: the retry time comes
        db_tasks().update(run_after=timezone.now() - timedelta(seconds=1))
        ConversionEvent.objects.update(next_attempt_at=timezone.now())
        call_command("db_worker", "--batch", "--no-startup-delay", verbosity=0)
        event.refresh_from_db()
        assert event.status == EventStatus.DELIVERED


@pytest.mark.django_db(transaction=True)
def test_a_deferred_retry_never_runs_before_its_events_are_due():
    # A task that ran early would find its events not yet due and be spent, leaving them to
    # the sweep; retries due within one second still share one task.
    due = timezone.now().replace(microsecond=250_000) + timedelta(seconds=5)
    with override_settings(TASKS=DB_BACKEND):
        schedule_retries(
            [(1, due), (2, due + timedelta(milliseconds=500)), (3, due.replace(microsecond=0))]
        )
        tasks = list(db_tasks().order_by("run_after"))
    assert [(t.run_after, t.args_kwargs["args"]) for t in tasks] == [
        (due.replace(microsecond=0), [[3]]),
        (due.replace(microsecond=0) + timedelta(seconds=1), [[1, 2]]),
    ]


@pytest.mark.django_db(transaction=True)
def test_no_task_backend_leaves_delivery_to_the_sweep(scanova_site, mocked_http):
    mocked_http.post(SCANOVA_URL, json={"success": True})
    with override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": None}):
        [event] = track(conversion())
        event.refresh_from_db()
        assert event.status == EventStatus.PENDING
        call_command("conversions_deliver", verbosity=0)
    event.refresh_from_db()
    assert event.status == EventStatus.DELIVERED
