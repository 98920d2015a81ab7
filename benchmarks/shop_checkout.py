"""The example shop's checkout, as a customer pays an order, under README's default settings.

Run by ``benchmarks/checkout.py`` (``bench_shop_checkout``) in a process of its own, because the
shop is another Django project (``example_project``, settings ``benchmarks/shop_settings.py``:
the demo's, on the run's PostgreSQL database). It times the ``POST /checkout/`` that places and
pays an order through Django's test client: the middleware, the session, the form, the order,
its lines, the payment, the conversion, the redirect. Each checkout's cart is filled first
(two products, not timed). Sides, interleaved round by round: no active site; two sites whose
provider answers after the given latency, with README's defaults (no ``TASKS``: Django's
immediate backend, so delivery runs on this process's background thread); the same sites with
``TASK_BACKEND: None`` (the outbox write alone).

Usage (by the benchmark): ``shop_checkout.py PROVIDER_URL ROUNDS PER_ROUND``; prints one JSON
object: each side's seconds per round, and what became of the events.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.shop_settings"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from shop.models import Product  # noqa: E402

from benchmarks.sites import make_site, set_active  # noqa: E402
from django_conversions.models import ConversionEvent, EventStatus  # noqa: E402
from django_conversions.tasks import background  # noqa: E402

SIDES = ("no sites", "2 sites", "2 sites, outbox only")
FORM = {
    "first_name": "Ana",
    "last_name": "Pop",
    "email": "ana@example.com",
    "phone": "0712345678",
    "city": "Cluj",
    "country": "Romania",
    "tracking_consent": "on",
}
UNFINISHED = (EventStatus.PENDING, EventStatus.SENDING)


def main() -> None:
    url, rounds, per_round = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    databases = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        result = run(url, rounds, per_round)
    finally:
        background.wait_idle(timeout=60)  # nothing may still use the database being dropped
        connections.close_all()
        teardown_databases(databases, verbosity=0)
    print(json.dumps(result))


def run(url: str, rounds: int, per_round: int) -> dict[str, Any]:
    for n in range(2):
        Product.objects.create(sku=f"BENCH-{n}", name=f"Product {n}", price=Decimal("19.90"))
    sites = [
        make_site(provider, url, n, active=False)
        for n, provider in enumerate(("scanova", "vtmarketing"))
    ]
    readme = dict(settings.CONVERSIONS)
    conversions = {
        "no sites": readme,
        "2 sites": readme,
        "2 sites, outbox only": {**readme, "TASK_BACKEND": None},
    }
    client = Client()
    # A customer who came from a QR campaign: the session keeps the scan id, which Scanova
    # needs (its events are skipped without it), and every order is attributed to the visit.
    client.get(f"/?scnv={uuid.uuid4()}")
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    undelivered_at_return: list[int] = []
    waits: list[float] = []
    for n in range(rounds):
        by = n % len(SIDES)
        for side in SIDES[by:] + SIDES[:by]:
            with override_settings(CONVERSIONS=conversions[side]):
                set_active(sites, set() if side == "no sites" else {site.pk for site in sites})
                seconds[side].append(sum(_checkout(client) for _ in range(per_round)))
                events = ConversionEvent.objects.filter(site__in=sites)
                if side == "2 sites":
                    undelivered_at_return.append(events.filter(status__in=UNFINISHED).count())
                    waits.append(_wait_delivered(events, timeout=60))
                elif side == "2 sites, outbox only":
                    events.filter(status=EventStatus.PENDING).delete()  # nothing delivers them
    events = ConversionEvent.objects.filter(site__in=sites)
    return {
        "seconds": seconds,
        "events": events.count(),
        "events_delivered": events.filter(status=EventStatus.DELIVERED).count(),
        "events_undelivered_when_checkouts_returned": undelivered_at_return,
        "seconds_until_delivered_after_round": waits,
    }


def _checkout(client: Client) -> float:
    """One customer's checkout: the cart filled (not timed), then the paying POST (timed)."""
    client.post("/cart/add/", {"sku": "BENCH-0", "quantity": "2"})
    client.post("/cart/add/", {"sku": "BENCH-1", "quantity": "1"})
    started = time.perf_counter()
    response = client.post("/checkout/", FORM)
    elapsed = time.perf_counter() - started
    if response.status_code != 302:
        raise RuntimeError(f"checkout answered {response.status_code}, not a redirect")
    return elapsed


def _wait_delivered(events: Any, timeout: float) -> float:
    """Wait until the events are delivered, so delivery never overlaps the next side."""
    started = time.perf_counter()
    while events.filter(status__in=UNFINISHED).exists():
        if time.perf_counter() - started > timeout:
            break
        time.sleep(0.05)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
