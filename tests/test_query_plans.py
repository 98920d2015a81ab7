"""A claim stays bounded whatever the backlog: it reads one sendable site's due events in the
due index's order, so it touches about as many rows as it takes.

PostgreSQL (production): a 100k-row backlog in each shape that used to make every claim read
all of it (everything due at the same instant; a paused site's 100k ahead of an active site's),
checked with EXPLAIN ANALYZE; the admin's and health's per-site counts of due and failed events read
the partial indexes that hold only those. SQLite: the same statements use the due index.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.test import override_settings
from django.utils import timezone

from django_conversions.delivery import claim
from django_conversions.delivery.claims import (
    due_events,
    expired_leases,
    sites_with_expired_leases,
)
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from tests.conftest import ON_POSTGRES

BACKLOG = 100_000
TAKE = 500
#: A claim of TAKE events for one Scanova site: a round of 5 requests of 100 events.
ONE_CLAIM_TAKES_TAKE = {"CLAIM_BATCH_SIZE": TAKE, "DELIVERY_CONCURRENCY": 5, "BATCH_SIZE": 100}


def make_site(name: str, **fields: Any) -> TrackingSite:
    return TrackingSite.objects.create(
        name=name, provider="scanova", provider_site_id="s", endpoint_url="https://x.test", **fields
    )


def backlog(site: TrackingSite, count: int, due_at, prefix: str = "") -> None:
    """``count`` pending events for ``site``, all due at ``due_at``."""
    ConversionEvent.objects.bulk_create(
        (
            ConversionEvent(
                site=site,
                event_name="purchase",
                dedup_key=f"{prefix}{n}",
                next_attempt_at=due_at,
                snapshot={},
            )
            for n in range(count)
        ),
        batch_size=5000,
    )


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def analyzed(queryset: Any) -> list[dict[str, Any]]:
    """The plan's nodes, run for real (EXPLAIN ANALYZE) inside a transaction."""
    with transaction.atomic():
        locked = queryset.select_for_update(skip_locked=True, of=("self",))
        found = locked.values_list("pk", flat=True)[:TAKE].explain(format="json", analyze=True)
    data = json.loads(found) if isinstance(found, str) else found
    return list(nodes(data[0]["Plan"]))


def assert_bounded(plan: list[dict[str, Any]]) -> None:
    kinds = [node["Node Type"] for node in plan]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
    [scan] = [node for node in plan if node.get("Index Name")]
    assert scan["Index Name"] == "conversions_event_due", scan
    # it read about as many rows as it took, not the backlog
    assert scan["Actual Rows"] <= TAKE + 1, scan


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_stays_bounded_in_every_backlog_shape():
    # given: 100k events of one site due at the same instant (after a resume or a mass retry)
    busy = make_site("busy")
    backlog(busy, BACKLOG, timezone.now() - timedelta(hours=1), "b")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_conversions_conversionevent")
    now = timezone.now()
    # then: its due queue and its expired-lease queue read the due index in order, bounded
    assert_bounded(analyzed(due_events("default", busy, now)))
    kinds = [node["Node Type"] for node in analyzed(expired_leases("default", busy, now))]
    assert "Seq Scan" not in kinds
    # and finding the sites with expired leases reads the lease index, not the backlog
    found = sites_with_expired_leases("default", now).explain(format="json", analyze=True)
    plan = list(nodes((json.loads(found) if isinstance(found, str) else found)[0]["Plan"]))
    assert "Seq Scan" not in [node["Node Type"] for node in plan], plan
    assert any(node.get("Index Name") == "conversions_event_lease" for node in plan), plan
    with override_settings(CONVERSIONS=ONE_CLAIM_TAKES_TAKE):
        assert len(claim(TAKE)) == TAKE

    # given: that site paused with its backlog, all due before another active site's 1k
    ConversionEvent.objects.filter(status=EventStatus.SENDING).update(
        status=EventStatus.PENDING, claim_token=None, lease_expires_at=None
    )
    busy.pause("key revoked")
    active = make_site("active")
    backlog(active, 1000, timezone.now() - timedelta(minutes=1), "a")
    # then: the active site's queue is read in index order, bounded
    assert_bounded(analyzed(due_events("default", active, timezone.now())))
    # and a claim takes the active site's events only; the paused backlog is never touched
    with override_settings(CONVERSIONS=ONE_CLAIM_TAKES_TAKE):
        lease = claim(TAKE)
    assert len(lease) == TAKE
    assert {e.site_id for e in lease.events} == {active.pk}
    assert not ConversionEvent.objects.filter(site=busy, status=EventStatus.SENDING).exists()

    # given: the busy site's backlog delivered, a few of its events failed
    ConversionEvent.objects.filter(site=busy).update(status=EventStatus.DELIVERED)
    failed = ConversionEvent.objects.filter(site=busy).order_by("pk")[:10].values("pk")
    ConversionEvent.objects.filter(pk__in=failed).update(status=EventStatus.FAILED)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_conversions_conversionevent")
    # then: its failed and its due events (the admin's counts, health) are read from the
    # partial indexes that hold only those, never from its 100k delivered events
    for status, index in (
        (EventStatus.FAILED, "conversions_event_failed"),
        (EventStatus.PENDING, "conversions_event_due"),
    ):
        counted = ConversionEvent.objects.filter(site=busy, status=status).order_by()
        found = counted.values("site").annotate(n=Count("pk")).explain(format="json", analyze=True)
        plan = list(nodes((json.loads(found) if isinstance(found, str) else found)[0]["Plan"]))
        assert "Seq Scan" not in [node["Node Type"] for node in plan], plan
        [scan] = [node for node in plan if node.get("Index Name")]
        assert scan["Index Name"] == index, scan
        assert scan["Actual Rows"] <= 10, scan


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's query plans")
@pytest.mark.django_db
def test_on_sqlite_a_claim_reads_the_due_index(scanova_site) -> None:
    due = due_events("default", scanova_site, timezone.now()).values_list("pk", flat=True)[:TAKE]
    found = due.explain()
    assert "conversions_event_due" in found
    assert "SCAN django_conversions_conversionevent" not in found.replace("USING INDEX", "")
    assert "USE TEMP B-TREE FOR ORDER BY" not in found
