"""Benchmarks for django-conversions on PostgreSQL, each figure measured side by side in one run.

1. Checkout (order, two lines, status changed to paid) with 2 and 5 active sites, as a ratio to
   the same checkout with no active site (targets <= 1.6x and <= 2.0x); no network call.
2. The same checkout under README's default settings with a provider answering in 3 s, as a
   ratio to no active site (target <= 1.1x), and whether the events got delivered; and the
   example shop's paying request (``POST /checkout/`` through Django's test client) likewise.
3. One worker, provider 20 ms away: Scanova events/s in batches (target >= 1,700) and
   VTmarketing as a ratio to a bare ``requests`` loop posting the same bodies (target >= 3x).
4. Scanova throughput with a VTmarketing site answering in 1 s in the same backlog, as a ratio
   to Scanova alone (target >= 0.8x).
5. Claim time with 100k pending as a ratio to 1k, all due at one instant and a paused site's
   events ahead of an active site's (target <= 2x each).
6. Bytes on disk each delivered event keeps once vacuumed, per provider (targets <= 1 KB and,
   once an attempt is one request, <= 600 B), with the figure before vacuum and a retention
   sizing table.

Each ratio is the median of paired rounds (the two sides back to back, their order alternating)
with the rounds' range. For each unmet target the run adds cProfile's top entries.

Usage: python benchmarks/run.py [--quick]. Writes benchmarks/results.json and
docs/benchmarks.md; ``--quick`` runs small counts and only prints. ``BENCH_DB`` picks the
database (``postgres``, the default, or ``sqlite``; see benchmarks/settings.py); the run
creates its own databases and drops them at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from benchmarks import backlog, checkout, disk, throughput  # noqa: E402
from benchmarks.docs import write_docs  # noqa: E402
from django_conversions.conf import conversions_settings  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: small counts and few rounds, figures printed, nothing written",
    )
    args = parser.parse_args(argv)
    # The run's own databases, created and migrated here, dropped however the run ends.
    databases = setup_databases(verbosity=0, interactive=False, aliases=set(settings.DATABASES))
    try:
        results = run(quick=args.quick)
    finally:
        connections.close_all()
        teardown_databases(databases, verbosity=0)
    if not args.quick:  # the published figures come from full runs only
        (ROOT / "benchmarks" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        write_docs(results, ROOT / "docs" / "benchmarks.md")
    print(json.dumps(results, indent=2))


def run(*, quick: bool) -> dict[str, Any]:
    full = not quick
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": connection.display_name,
        "delivery_concurrency": conversions_settings.DELIVERY_CONCURRENCY,
        "claim_batch_size": conversions_settings.CLAIM_BATCH_SIZE,
    }
    results["checkout"] = checkout.bench_checkout(
        rounds=60 if full else 4, per_round=5, profile=full
    )
    results["readme_defaults"] = checkout.bench_readme_defaults(
        rounds=8 if full else 2, per_round=3 if full else 1, latency=3.0
    )
    results["shop_checkout"] = checkout.bench_shop_checkout(
        rounds=6 if full else 1, per_round=20 if full else 4, latency=3.0
    )
    gc.freeze()  # as a conversions_deliver process does once it is loaded
    results["scanova_worker"] = throughput.bench_worker(
        "scanova",
        count=3000 if full else 400,
        rounds=5 if full else 1,
        latency=0.02,
        profile=full,
    )
    results["vtmarketing_worker"] = throughput.bench_worker(
        "vtmarketing",
        count=400 if full else 40,
        rounds=3 if full else 1,
        latency=0.02,
        profile=full,
    )
    results["slow_neighbour"] = throughput.bench_slow_neighbour(
        count=2000 if full else 300, rounds=3 if full else 1, fast=0.02, slow=1.0, profile=full
    )
    results["claims"] = backlog.bench_claims(
        small=1000,
        large=100_000 if full else 5000,
        rounds=30 if full else 4,
        take=500,
        profile=full,
    )
    if settings.BENCH_DB == "postgres":
        results["disk"] = disk.bench_disk(count=10_000 if full else 200)
    return results


if __name__ == "__main__":
    main()
