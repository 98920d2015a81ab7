"""The retention purge in bounded batches: each batch of N rows is its own short transaction
(what an earlier batch deleted is gone for everyone while the purge goes on), and nothing that
must stay is lost, however the rows that stay and go are interleaved."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone

from django_conversions.models import ConversionEvent, DeliveryAttempt, EventResult, EventStatus
from django_conversions.privacy import purge_old_events
from tests.attempts import record_attempt

OLD = timedelta(days=200)
YOUNG = timedelta(days=10)


def event(site: Any, age: timedelta, status: str) -> ConversionEvent:
    return ConversionEvent.objects.create(
        site=site,
        event_name="purchase",
        dedup_key=f"purchase:{uuid.uuid4()}",
        order_reference=f"{status}-{age.days}-{uuid.uuid4().hex[:4]}",
        status=status,
        created_at=timezone.now() - age,
    )


def shop(site: Any) -> dict[str, list[ConversionEvent]]:
    """40 old finished events, with old pending and young delivered events among them (every
    fifth and seventh row), each sent in its own attempt; every tenth young event shares its
    attempt with an old one."""
    rows: dict[str, list[ConversionEvent]] = {"old": [], "pending": [], "young": []}
    for n in range(60):
        if n % 5 == 0:
            rows["pending"].append(event(site, OLD, EventStatus.PENDING))
        elif n % 7 == 0:
            rows["young"].append(event(site, YOUNG, EventStatus.DELIVERED))
        else:
            status = EventStatus.FAILED if n % 3 == 0 else EventStatus.DELIVERED
            rows["old"].append(event(site, OLD, status))
    for item in rows["old"] + rows["pending"]:
        record_attempt([item], created_at=timezone.now() - YOUNG)
    for n, item in enumerate(rows["young"]):
        carried = [item, rows["old"][n]] if n % 2 == 0 else [item]
        record_attempt(carried, created_at=timezone.now() - YOUNG)
    return rows


def old_left(using: str = "default") -> int:
    """Old finished events, as another connection sees them (committed rows only)."""
    counted: list[int] = []

    def count() -> None:
        try:
            counted.append(
                ConversionEvent.objects.using(using)
                .filter(created_at__lt=timezone.now() - timedelta(days=180))
                .exclude(status=EventStatus.PENDING)
                .count()
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=count)
    thread.start()
    thread.join()
    return counted[0]


@pytest.mark.django_db(transaction=True)
def test_a_purge_runs_in_batches_each_committed_and_keeps_what_must_stay(scanova_site):
    # given
    rows = shop(scanova_site)
    kept_attempts = set(
        DeliveryAttempt.objects.filter(
            results__event__in=rows["pending"] + rows["young"]
        ).values_list("pk", flat=True)
    )
    seen_by_others: list[int] = []

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Before each batch deletes its events: what do other connections see?
        if sql.startswith('DELETE FROM "django_conversions_conversionevent"'):
            seen_by_others.append(old_left())
        return execute(sql, params, many, context)

    # when: purged 8 rows at a time
    with (
        override_settings(CONVERSIONS={**settings.CONVERSIONS, "RETENTION_DAYS": 180}),
        connection.execute_wrapper(watch),
    ):
        report = purge_old_events(batch_size=8)
    # then: several batches, each committed before the next began
    assert len(seen_by_others) >= 5
    assert seen_by_others == sorted(seen_by_others, reverse=True)
    assert len(set(seen_by_others)) == len(seen_by_others)  # every batch was visible at once
    # and every old finished event went, with its results and the attempts only it used
    assert sum(report.events.values()) == len(rows["old"])
    assert set(ConversionEvent.objects.values_list("pk", flat=True)) == {
        e.pk for e in rows["pending"] + rows["young"]
    }
    # while the attempts and results of the events that stay are all there
    assert set(DeliveryAttempt.objects.values_list("pk", flat=True)) == kept_attempts
    assert EventResult.objects.count() == len(rows["pending"]) + len(rows["young"])


@pytest.mark.django_db(transaction=True)
def test_conversions_purge_takes_the_batch_size(scanova_site):
    # given
    for _ in range(5):
        event(scanova_site, OLD, EventStatus.DELIVERED)
    deletes: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith('DELETE FROM "django_conversions_conversionevent"'):
            deletes.append(sql)
        return execute(sql, params, many, context)

    out = io.StringIO()
    # when
    with connection.execute_wrapper(count):
        call_command("conversions_purge", "--batch-size", "2", stdout=out)
    # then
    assert len(deletes) == 3
    assert "Did delete events older than 180 days: 5 events (5 delivered)" in out.getvalue()
    assert not ConversionEvent.objects.exists()
