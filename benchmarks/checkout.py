"""The checkout's cost: tracked with 2 and 5 active sites, and under README's default settings
with a slow provider, each against the same checkout with no active site."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from benchmarks.common import (
    checkout,
    checkouts,
    clear_database,
    local_server,
    median,
    no_network,
    paired,
    profile_top,
    unfinished,
)
from benchmarks.sites import make_site, set_active
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite

CHECKOUT_TARGETS = {"2 sites": 1.6, "5 sites": 2.0}
README_TARGET = 1.1
SHOP_CHECKOUT = Path(__file__).resolve().parent / "shop_checkout.py"


def _rotated(items: list[str], by: int) -> list[str]:
    """The sides in a different order each round, so none always runs first."""
    by %= len(items)
    return items[by:] + items[:by]


def bench_checkout(rounds: int, per_round: int, *, profile: bool) -> dict[str, Any]:
    """Checkouts with 0, 2 and 5 active sites, interleaved in rounds of ``per_round`` each."""
    clear_database()
    providers = ("scanova", "vtmarketing", "scanova", "vtmarketing", "scanova")
    # Sites never reached: the checkout must not touch the network (checked below).
    sites = [make_site(p, f"https://{p}-{n}.invalid", n) for n, p in enumerate(providers)]
    sides: dict[str, set[int]] = {
        "no sites": set(),
        "2 sites": {site.pk for site in sites[:2]},
        "5 sites": {site.pk for site in sites},
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    with no_network():
        for name in sides:  # warm every path once
            set_active(sites, sides[name])
            checkout(0)
        for n in range(rounds):
            for name in _rotated(list(sides), n):
                _switch(sites, sides[name])
                seconds[name].append(checkouts(per_round))
        queries = {}
        for name in sides:
            _switch(sites, sides[name])
            with CaptureQueriesContext(connection) as captured:
                checkout(0)
            queries[name] = [_statement(query["sql"]) for query in captured.captured_queries]
    expected = (2 + 5) * (rounds * per_round + rounds + 3)
    events = ConversionEvent.objects.count()
    assert events == expected, (events, expected)
    result: dict[str, Any] = {
        "checkouts_per_side": rounds * per_round,
        "ms_per_checkout": {
            name: round(1000 * median(times, 6) / per_round, 3) for name, times in seconds.items()
        },
        # The statements of one checkout, BEGIN and COMMIT included.
        "statements_per_checkout": queries,
        "network_calls_in_save_path": 0,
    }
    for name, target in CHECKOUT_TARGETS.items():
        figure = paired(seconds[name], seconds["no sites"])
        result[name] = {**figure, "target": f"<= {target}", "met": figure["ratio"] <= target}
        if profile and not result[name]["met"]:
            set_active(sites, set())
            with no_network():
                untracked = profile_top(lambda: checkouts(200))["total_s"]
            result[name]["profile_no_sites_total_s"] = untracked
            set_active(sites, sides[name])
            with no_network():
                result[name]["profile"] = profile_top(lambda: checkouts(200))
                result[name]["profile_tracking_code"] = profile_top(
                    lambda: checkouts(200), only="django_conversions/"
                )
    return result


def _switch(sites: list[TrackingSite], active: set[int]) -> None:
    """Switch the sites, then one checkout untimed: saving a site drops the process's list
    of active sites, which the next tracked save reads again (then kept for seconds)."""
    set_active(sites, active)
    checkout(0)


def _statement(sql: str) -> str:
    """A statement's kind and table: ``SELECT testapp_orderitem``."""
    table = re.search(r'(?:FROM|INTO|UPDATE) "(\w+)"', sql)
    return sql.split(None, 1)[0] + (f" {table.group(1)}" if table else "")


def bench_readme_defaults(rounds: int, per_round: int, latency: float) -> dict[str, Any]:
    """Checkouts under README's settings (no TASKS, no TASK_BACKEND: the app's default delivery
    path) with both sites' provider answering after ``latency`` seconds, against the same
    checkouts with no active site. A third side, the same sites with no task backend (the
    outbox write alone), tells the outbox's share from the delivery path's."""
    readme = settings.README_CONVERSIONS
    sides: dict[str, dict[str, Any]] = {
        "no sites": readme,
        "2 sites": readme,
        "2 sites, outbox only": {**readme, "TASK_BACKEND": None},
    }
    with local_server(latency) as url:
        clear_database()
        sites = [make_site("scanova", url, 0), make_site("vtmarketing", url, 1)]
        everything = {site.pk for site in sites}
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        undelivered_at_return: list[int] = []
        waits: list[float] = []
        for n in range(rounds):
            for name in _rotated(list(sides), n):
                with override_settings(CONVERSIONS=sides[name]):
                    set_active(sites, set() if name == "no sites" else everything)
                    seconds[name].append(checkouts(per_round))
                    if name == "2 sites":
                        undelivered_at_return.append(unfinished(sites))
                        # The delivery going on after these checkouts would overlap the next
                        # side's: wait for it.
                        waits.append(_wait_delivered(sites, timeout=20 * latency + 30))
                    elif name == "2 sites, outbox only":
                        # Nothing delivers these (no task backend, no sweep here): remove them
                        # so that waiting for the other side's delivery is not waiting for them.
                        left = ConversionEvent.objects.filter(site__in=sites)
                        left.filter(status=EventStatus.PENDING).delete()
        events = ConversionEvent.objects.filter(site__in=sites)
        delivered = events.filter(status=EventStatus.DELIVERED).count()
    return {
        **_readme_sides(seconds, rounds, per_round, latency),
        # Events still pending or sending when a round's checkouts had returned: 0 every time
        # would mean the checkout itself waited for the provider.
        "events_undelivered_when_checkouts_returned": undelivered_at_return,
        "events": events.count(),
        "events_delivered": delivered,
        "median_s_until_delivered_after_round": median(waits),
    }


def _readme_sides(
    seconds: dict[str, list[float]], rounds: int, per_round: int, latency: float
) -> dict[str, Any]:
    """The README side and the outbox-only side, each as a ratio to no active site."""
    figure = paired(seconds["2 sites"], seconds["no sites"])
    outbox = paired(seconds["2 sites, outbox only"], seconds["no sites"])
    return {
        "provider_latency_s": latency,
        "checkouts_per_side": rounds * per_round,
        "ms_per_checkout": {
            name: round(1000 * median(times, 6) / per_round, 3) for name, times in seconds.items()
        },
        **figure,
        "target": f"<= {README_TARGET}",
        "met": figure["ratio"] <= README_TARGET,
        "outbox_only_ratio": outbox["ratio"],
        "outbox_only_rounds_range": outbox["rounds_range"],
    }


def _wait_delivered(sites: list[TrackingSite], timeout: float) -> float:
    """Wait until these sites' events are all delivered (or given up on); return how long.

    Between rounds, so that the delivery running after one round's checkouts does not
    overlap the next round's measurement.
    """
    started = time.perf_counter()
    while unfinished(sites) and time.perf_counter() - started < timeout:
        time.sleep(0.05)
    return time.perf_counter() - started


def bench_shop_checkout(rounds: int, per_round: int, latency: float) -> dict[str, Any]:
    """The example shop's paying ``POST /checkout/`` under README's defaults, with both sites'
    provider answering after ``latency`` seconds, against no active site; the outbox write
    alone as a third side. Run in a process of its own (``benchmarks/shop_checkout.py``)."""
    with local_server(latency) as url:
        found = subprocess.run(
            [sys.executable, str(SHOP_CHECKOUT), url, str(rounds), str(per_round)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
            env={**os.environ, "CONVERSIONS_BENCH_RUN_PID": str(os.getpid())},
        )
    raw = json.loads(found.stdout.splitlines()[-1])
    return {
        **_readme_sides(raw["seconds"], rounds, per_round, latency),
        "checkouts_per_round": per_round,
        "events_undelivered_when_checkouts_returned": raw[
            "events_undelivered_when_checkouts_returned"
        ],
        "events": raw["events"],
        "events_delivered": raw["events_delivered"],
        "median_s_until_delivered_after_round": median(raw["seconds_until_delivered_after_round"]),
    }
