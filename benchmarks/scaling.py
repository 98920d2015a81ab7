"""Scaling out on PostgreSQL: worker processes side by side against a provider 50 ms away.

1. 4 worker processes vs 1 draining the same backlog, Scanova (batches) and VTmarketing (one
   event per request): throughput ratio (target >= 3.5x each).
2. 2 worker processes vs 1 on a 100-event backlog, both providers (target: never slower,
   >= 1.0x).

Each worker is its own process (``benchmarks/scaling_worker.py``: Django loaded, then
``deliver_due()`` on a signal), so process start-up is not timed; a side's time runs from the
signal to the last worker's end. Each ratio is the median of paired rounds, the two sides back
to back with their order alternating (see docs/benchmarks.md). Each side also reports the CPU
its workers spent per event (all their threads), and one extra 4-worker drain per provider is
profiled with cProfile in one of its workers.

Usage: python benchmarks/scaling.py [--quick]. Writes benchmarks/scaling_results.json and
docs/scaling.md; ``--quick`` runs small counts and only prints. PostgreSQL only (several
processes share the database); the run creates its own database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
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

from benchmarks.common import (  # noqa: E402
    clear_database,
    local_server,
    median,
    paired,
    record_events,
)
from benchmarks.sites import make_site  # noqa: E402
from django_conversions.conf import conversions_settings  # noqa: E402
from django_conversions.models import ConversionEvent, DeliveryAttempt, EventStatus  # noqa: E402

WORKER = ROOT / "benchmarks" / "scaling_worker.py"
SCALE_TARGET = 3.5  # 4 workers / 1
SMALL_TARGET = 1.0  # 2 workers / 1 on a small backlog: never slower
LATENCY = 0.05


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, nothing written")
    args = parser.parse_args(argv)
    if settings.BENCH_DB != "postgres":
        raise SystemExit("benchmarks/scaling.py runs on PostgreSQL only (BENCH_DB=postgres)")
    databases = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        results = run(quick=args.quick)
    finally:
        connections.close_all()
        teardown_databases(databases, verbosity=0)
    if not args.quick:
        (ROOT / "benchmarks" / "scaling_results.json").write_text(
            json.dumps(results, indent=2) + "\n"
        )
        write_docs(results, ROOT / "docs" / "scaling.md")
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
        "latency_ms": round(LATENCY * 1000),
        "delivery_concurrency": conversions_settings.DELIVERY_CONCURRENCY,
        "batch_size": conversions_settings.BATCH_SIZE,
        "claim_batch_size": conversions_settings.CLAIM_BATCH_SIZE,
    }
    results["scale"] = [
        bench_scale("scanova", 4, count=4000 if full else 400, rounds=3 if full else 1),
        bench_scale("vtmarketing", 4, count=400 if full else 40, rounds=3 if full else 1),
    ]
    results["small_backlog"] = [
        bench_scale("scanova", 2, count=100, rounds=5 if full else 1, profile=False),
        bench_scale("vtmarketing", 2, count=100, rounds=5 if full else 1, profile=False),
    ]
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def drain(workers: int, *, profile: bool = False) -> dict[str, Any]:
    """Start ``workers`` processes, let them drain at once, and time it."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
        PGDATABASE=connection.settings_dict["NAME"],
        PYTHONPATH=str(ROOT),
    )
    processes = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *(["--profile"] if profile and n == 0 else [])],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        started = time.time()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        lines = []
        for process in processes:
            assert process.stdout is not None
            lines.append(json.loads(process.stdout.readline()))
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    result: dict[str, Any] = {
        "seconds": max(line["finished"] for line in lines) - started,
        "handled": sum(line["handled"] for line in lines),
        "per_worker": [line["handled"] for line in lines],
        "cpu_s": sum(line["cpu_s"] for line in lines),
    }
    profiled = [line["profile"] for line in lines if "profile" in line]
    if profiled:
        result["profile"] = profiled[0]
    return result


def _fresh_backlog(site: Any, count: int) -> None:
    ConversionEvent.objects.all().delete()
    DeliveryAttempt.objects.all().delete()
    record_events(count, [site])


def bench_scale(
    provider: str, workers: int, *, count: int, rounds: int, profile: bool = True
) -> dict[str, Any]:
    """``workers`` processes vs one, on the same backlog of ``count`` events."""
    clear_database()
    rates: dict[int, list[float]] = {1: [], workers: []}
    cpu_ms: dict[int, list[float]] = {1: [], workers: []}
    shares: list[list[int]] = []
    with local_server(LATENCY) as url:
        site = make_site(provider, url, 0)
        for n in range(rounds):
            for side in (1, workers) if n % 2 == 0 else (workers, 1):
                _fresh_backlog(site, count)
                run = drain(side)
                delivered = ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count()
                assert delivered == count == run["handled"], (delivered, run)
                rates[side].append(count / run["seconds"])
                cpu_ms[side].append(1000 * run["cpu_s"] / count)
                if side == workers:
                    shares.append(run["per_worker"])
        figure = paired(rates[workers], rates[1])
        target = SCALE_TARGET if workers == 4 else SMALL_TARGET
        result: dict[str, Any] = {
            "provider": provider,
            "workers": workers,
            "events_per_round": count,
            "one_worker_events_per_s": median(rates[1], 1),
            "workers_events_per_s": median(rates[workers], 1),
            **figure,
            "target": f">= {target}x",
            "met": figure["ratio"] >= target,
            "cpu_ms_per_event_one_worker": median(cpu_ms[1], 3),
            "cpu_ms_per_event_workers": median(cpu_ms[workers], 3),
            "events_per_worker": shares,
        }
        if profile:
            _fresh_backlog(site, count)
            result["profile_one_of_4_workers"] = drain(4, profile=True).get("profile")
    ConversionEvent.objects.all().delete()
    return result


def write_docs(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Scaling benchmark",
        "",
        "Generated by `python benchmarks/scaling.py` (PostgreSQL); raw figures in",
        "`benchmarks/scaling_results.json`. Don't edit this page by hand: rerun it.",
        "",
        f"Last run: {results['when']} on {results['machine']} (load average "
        f"{', '.join(map(str, results['load_average_at_start']))} at start, "
        f"{', '.join(map(str, results['load_average_at_end']))} at end), Python "
        f"{results['python']}, Django {results['django']}, {results['database']}; provider "
        f"{results['latency_ms']} ms away (a local server answering after that long), "
        f"`DELIVERY_CONCURRENCY` {results['delivery_concurrency']}, `BATCH_SIZE` "
        f"{results['batch_size']}.",
        "",
        "Each worker is its own process (`benchmarks/scaling_worker.py`), loaded before the",
        "clock starts; a side's time runs from the start signal to the last worker's end.",
        "Ratios are medians of paired rounds (both sides back to back, order alternating),",
        "with the rounds' range. CPU per event is all the workers' CPU time (every thread)",
        "over the events delivered. The machine's CPUs are shared with other work: the",
        "load average shows how much.",
        "",
        "| scenario | events | 1 worker, events/s | N workers, events/s | ratio | rounds' range "
        "| target | met | CPU ms/event, 1 worker | CPU ms/event, N workers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["scale"] + results["small_backlog"]:
        lines.append(
            f"| {row['provider']}, {row['workers']} workers / 1 | {row['events_per_round']} | "
            f"{row['one_worker_events_per_s']} | {row['workers_events_per_s']} | "
            f"**{row['ratio']}x** | {row['rounds_range'][0]}-{row['rounds_range'][1]}x over "
            f"{row['rounds']} rounds | {row['target']} | {'yes' if row['met'] else '**no**'} | "
            f"{row['cpu_ms_per_event_one_worker']} | {row['cpu_ms_per_event_workers']} |"
        )
    lines += ["", "Events each worker delivered, per round (N workers):", ""]
    for row in results["scale"] + results["small_backlog"]:
        lines.append(f"- {row['provider']}, {row['workers']} workers: {row['events_per_worker']}")
    for row in results["scale"]:
        profile = row.get("profile_one_of_4_workers")
        if not profile:
            continue
        lines += [
            "",
            f"## Where one of 4 workers spends its time, {row['provider']}",
            "",
            f"cProfile of one worker's drain (its own thread; {profile['total_s']} s profiled, "
            f"{profile['waiting_for_threads_s']} s of it waiting for HTTP threads):",
            "",
            "```",
            *profile["by_cumulative"],
            "by own time:",
            *profile["by_own_time"],
            "```",
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
