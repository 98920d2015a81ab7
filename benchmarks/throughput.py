"""One worker's delivery throughput against a provider 20 ms away: Scanova in batches, and
VTmarketing (one event per request) against a bare ``requests`` loop posting the same bodies;
then Scanova with and without a slow VTmarketing site in the same backlog."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import requests
from django.db.models import Max
from django.utils import timezone

from benchmarks.common import (
    clear_database,
    local_server,
    median,
    paired,
    profile_top,
    record_events,
    recorded_requests,
    unfinished,
)
from benchmarks.sites import make_site, set_active
from django_conversions.conf import conversions_settings
from django_conversions.delivery import DeliveryReport, claim, deliver_due
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite

SCANOVA_TARGET = 1700.0  # events/s
VT_TARGET = 3.0  # x a bare requests loop
NEIGHBOUR_TARGET = 0.8  # x Scanova alone
# Headers a client sets by itself; the rest of what the worker sent is replayed as it was.
_CLIENT_HEADERS = {"host", "content-length", "connection", "accept-encoding", "accept"}


def _capture(provider: str, count: int, latency: float) -> list[dict[str, Any]]:
    """The requests the worker makes for ``count`` events, as a recording server saw them."""
    with recorded_requests() as (path, captured), local_server(latency, record=path) as url:
        site = make_site(provider, url, 99)
        record_events(count, [site])
        report = deliver_due()
        assert report.delivered == count, report
        site.delete()
    return captured


def _bare_loop(url: str, captured: list[dict[str, Any]]) -> float:
    """Post the captured requests one after another with a plain ``requests.Session``;
    return the events per second it managed."""
    session = requests.Session()
    prepared = [
        (
            url + request["path"],
            request["body"].encode(),
            {k: v for k, v in request["headers"].items() if k.lower() not in _CLIENT_HEADERS},
        )
        for request in captured
    ]
    events = sum(_events_in(request["body"]) for request in captured)
    started = time.perf_counter()
    for target, body, headers in prepared:
        response = session.post(target, data=body, headers=headers, timeout=10)
        assert response.status_code == 200, response.status_code
    return events / (time.perf_counter() - started)


def _events_in(body: str) -> int:
    data = json.loads(body)
    return len(data["events"]) if isinstance(data, dict) and "events" in data else 1


def _worker_rate(site: TrackingSite, count: int) -> float:
    record_events(count, [site])
    started = time.perf_counter()
    report = deliver_due()
    elapsed = time.perf_counter() - started
    _assert_all_delivered(report, count)
    return count / elapsed


def _assert_all_delivered(report: DeliveryReport, count: int) -> None:
    # Nothing held back: a round that met the provider's rate limit would not measure the
    # worker (each provider's per-minute budget is far above what one round sends).
    assert report.delivered == count and report.deferred == 0, report


def bench_worker(
    provider: str, count: int, rounds: int, latency: float, *, profile: bool
) -> dict[str, Any]:
    """The worker (``deliver_due()``) and a bare loop posting the same requests, interleaved."""
    clear_database()
    captured = _capture(provider, count, latency)
    worker: list[float] = []
    bare: list[float] = []
    with local_server(latency) as url:
        site = make_site(provider, url, 0)
        for n in range(rounds):
            for side in ("bare", "worker") if n % 2 == 0 else ("worker", "bare"):
                if side == "bare":
                    bare.append(_bare_loop(url, captured))
                else:
                    worker.append(_worker_rate(site, count))
        figure = paired(worker, bare)
        result: dict[str, Any] = {
            "provider": provider,
            "latency_ms": round(latency * 1000),
            "events_per_round": count,
            "requests_per_round": len(captured),
            "worker_events_per_s": median(worker, 1),
            "bare_loop_events_per_s": median(bare, 1),
            **figure,
        }
        if provider == "scanova":
            met = result["worker_events_per_s"] >= SCANOVA_TARGET
            result.update(target=f">= {SCANOVA_TARGET:.0f} events/s", met=met)
        else:
            met = figure["ratio"] >= VT_TARGET
            result.update(target=f">= {VT_TARGET}x the bare loop", met=met)
        if profile and not met:
            record_events(count, [site])
            result["profile"] = profile_top(deliver_due)
        result["events_per_claim"] = _claim_size(site, count)
    return result


def _claim_size(site: TrackingSite, count: int) -> int:
    """How many of the site's events one claim takes (``claim(CLAIM_BATCH_SIZE)``, as
    ``deliver_due()`` asks) with ``count`` due; the events are removed afterwards."""
    record_events(count, [site])
    taken = len(claim(conversions_settings.CLAIM_BATCH_SIZE))
    ConversionEvent.objects.filter(site=site).exclude(status=EventStatus.DELIVERED).delete()
    return taken


def bench_slow_neighbour(
    count: int, rounds: int, fast: float, slow: float, *, profile: bool
) -> dict[str, Any]:
    """Scanova's throughput (its events over the time until its last one was delivered) with
    and without a VTmarketing site answering after ``slow`` seconds in the same backlog."""
    clear_database()
    alone: list[float] = []
    beside: list[float] = []
    with local_server(fast) as fast_url, local_server(slow) as slow_url:
        scanova = make_site("scanova", fast_url, 0)
        vt = make_site("vtmarketing", slow_url, 1)
        backlog = 200
        for n in range(rounds):
            for side in ("alone", "beside") if n % 2 == 0 else ("beside", "alone"):
                if side == "beside":
                    _top_up([scanova, vt], vt, backlog)
                set_active([scanova, vt], {scanova.pk, vt.pk} if side == "beside" else {scanova.pk})
                rate = _scanova_rate(scanova, count)
                (beside if side == "beside" else alone).append(rate)
        figure = paired(beside, alone)
        result: dict[str, Any] = {
            "scanova_latency_ms": round(fast * 1000),
            "vtmarketing_latency_ms": round(slow * 1000),
            "scanova_events_per_round": count,
            "vtmarketing_backlog": backlog,
            "scanova_alone_events_per_s": median(alone, 1),
            "scanova_beside_slow_site_events_per_s": median(beside, 1),
            **figure,
            "target": f">= {NEIGHBOUR_TARGET}",
            "met": figure["ratio"] >= NEIGHBOUR_TARGET,
        }
        if profile and not result["met"]:
            _top_up([scanova, vt], vt, backlog)
            set_active([scanova, vt], {scanova.pk, vt.pk})
            record_events(count, [scanova])
            result["profile"] = profile_top(lambda: deliver_due(should_stop=_done(scanova)))
    return result


def _top_up(sites: list[TrackingSite], slow: TrackingSite, backlog: int) -> None:
    """Give the slow site ``backlog`` pending events again (tracked for it alone)."""
    set_active(sites, {slow.pk})
    missing = backlog - unfinished([slow])
    if missing > 0:
        record_events(missing, [slow])


def _done(site: TrackingSite) -> Any:
    return lambda: unfinished([site]) == 0


def _scanova_rate(site: TrackingSite, count: int) -> float:
    """Track ``count`` events for the site, deliver until they are all delivered (the other
    site's requests in flight then finish and the rest waits), and return the site's events
    per second: from the start to its last event's delivery."""
    record_events(count, [site])
    started: datetime = timezone.now()
    deliver_due(should_stop=_done(site))
    events = ConversionEvent.objects.filter(site=site, delivered_at__gte=started)
    assert events.filter(status=EventStatus.DELIVERED).count() == count
    last = events.aggregate(last=Max("delivered_at"))["last"]
    return count / (last - started).total_seconds()
