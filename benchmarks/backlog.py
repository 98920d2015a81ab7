"""Claim time against the size of the backlog, in the shapes that used to make a claim read
all of it: every event due at the same instant, and a paused site's events ahead of an active
site's. The small and the large backlog live in two databases of the same server, built the
same way; claims alternate between them (``BenchRouter`` points the app at one at a time)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from benchmarks.common import clear_database, conversion, median, paired, profile_top
from benchmarks.settings import BACKLOG_ALIAS, BenchRouter
from benchmarks.sites import make_site
from django_conversions import track
from django_conversions.conf import conversions_settings
from django_conversions.delivery import claim
from django_conversions.delivery.claims import site_claim_step
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite

CLAIM_TARGET = 2.0
#: Events of the active site in the "paused site ahead" shape, in both databases.
ACTIVE_EVENTS = 1000
#: Rows per INSERT while building a backlog.
INSERT_ROWS = 2000
SHAPES = ("same_instant", "paused_site_ahead")


@contextmanager
def routed(alias: str) -> Iterator[None]:
    previous, BenchRouter.alias = BenchRouter.alias, alias
    try:
        yield
    finally:
        BenchRouter.alias = previous


def bench_claims(
    small: int, large: int, rounds: int, take: int, *, profile: bool
) -> dict[str, Any]:
    """Time ``claim(take)`` with ``small`` and ``large`` events in each backlog shape.

    The sending site is a Scanova site: one claim takes one round of its requests of it
    (``site_claim_step``), at most ``take``."""
    sizes = {"default": small, BACKLOG_ALIAS: large}
    expected = min(take, site_claim_step(conversions_settings.BATCH_SIZE))
    sites: dict[str, tuple[TrackingSite, TrackingSite]] = {}
    for alias, size in sizes.items():
        with routed(alias):
            sites[alias] = _build(size)
    results: dict[str, Any] = {
        "claim_size": take,
        "events_per_claim": expected,
        "small": small,
        "large": large,
    }
    for shape in SHAPES:
        seconds: dict[str, list[float]] = {alias: [] for alias in sizes}
        for alias in sizes:
            with routed(alias):
                _shape(shape, *sites[alias])
                _claim_and_restore(take, expected)  # warm
        for n in range(rounds):
            for alias in list(sizes) if n % 2 == 0 else list(sizes)[::-1]:
                with routed(alias):
                    seconds[alias].append(_claim_and_restore(take, expected))
        figure = paired(seconds[BACKLOG_ALIAS], seconds["default"])
        results[shape] = {
            "ms_per_claim_small": round(1000 * median(seconds["default"], 6), 2),
            "ms_per_claim_large": round(1000 * median(seconds[BACKLOG_ALIAS], 6), 2),
            **figure,
            "target": f"<= {CLAIM_TARGET}",
            "met": figure["ratio"] <= CLAIM_TARGET,
        }
        if profile and not results[shape]["met"]:
            with routed(BACKLOG_ALIAS):
                results[shape]["profile"] = profile_top(lambda: _claim_and_restore(take, expected))
    for alias in sizes:
        with routed(alias):
            clear_database()
    return results


def _build(size: int) -> tuple[TrackingSite, TrackingSite]:
    """Site ``first``: ``size`` events all due at one instant; site ``second``:
    ``ACTIVE_EVENTS`` due after them. Inserted with ``bulk_create``, then analysed."""
    clear_database()
    first = make_site("scanova", "https://first.invalid", 0)
    second = make_site("scanova", "https://second.invalid", 1)
    with transaction.atomic():
        [model] = track(conversion(0), sites=[first])
    due = timezone.now() - timedelta(hours=1)
    _insert(first, size, due, model)
    _insert(second, ACTIVE_EVENTS, due + timedelta(minutes=1), model, spread=True)
    model.delete()
    with connections[BenchRouter.alias].cursor() as cursor:
        # What autovacuum would have done by the time such a backlog exists: fresh statistics.
        cursor.execute(f"ANALYZE {ConversionEvent._meta.db_table}")
    return first, second


def _insert(
    site: TrackingSite, count: int, due: Any, model: ConversionEvent, spread: bool = False
) -> None:
    fields = [f for f in ConversionEvent._meta.concrete_fields if not f.primary_key]
    rows = [
        ConversionEvent(
            site=site,
            event_id=uuid.uuid4(),
            event_name=model.event_name,
            dedup_key=f"bench:{site.pk}:{n}",
            order_reference=f"B-{n}",
            status=EventStatus.PENDING,
            next_attempt_at=due + timedelta(milliseconds=n) if spread else due,
            snapshot=model.snapshot,
            created_at=due,
        )
        for n in range(count)
    ]
    size = min(INSERT_ROWS, connections[BenchRouter.alias].ops.bulk_batch_size(fields, rows))
    ConversionEvent.objects.bulk_create(rows, batch_size=max(1, size))


def _shape(shape: str, first: TrackingSite, second: TrackingSite) -> None:
    """Pause the site that plays no part: the second for all due at one instant, the first
    (the big backlog) for a paused site's events ahead of an active site's."""
    paused, running = (second, first) if shape == "same_instant" else (first, second)
    paused.paused_at, paused.paused_reason = timezone.now(), "benchmark"
    running.paused_at, running.paused_reason = None, ""
    for site in (paused, running):
        site.save(update_fields=["paused_at", "paused_reason", "updated_at"])


def _claim_and_restore(take: int, expected: int) -> float:
    """Seconds one ``claim(take)`` took; its events are then put back exactly as they were
    (the claim changes only these three fields), so every round sees the same backlog."""
    started = time.perf_counter()
    lease = claim(take)
    elapsed = time.perf_counter() - started
    assert len(lease) == expected, (len(lease), expected)
    ConversionEvent.objects.filter(claim_token=lease.token).update(
        status=EventStatus.PENDING, claim_token=None, lease_expires_at=None
    )
    return elapsed
