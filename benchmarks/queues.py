"""RQ and Celery at volume: 10,000 orders through each queue, a worker stopped mid-run.

For each queue, twice: two workers on the local Redis (``benchmarks/queue_settings.py``), a
local Scanova-like provider in this process counting every event_id it receives, 10,000
conversions recorded in transactions of 100 (one task per commit). When the provider has
received a third of them, one worker is stopped (with whatever it forked); the other goes on.
The first run stops it with SIGTERM, as a deploy or a scale-down does (the queue's warm
shutdown: the task it is running finishes); the second kills it with SIGKILL, as the kernel's
out-of-memory killer does, whatever it has on the wire. Once
everything recorded is handed over and the killed worker's leases have run out, the sweep
(``conversions_deliver``) runs once. Then it counts: events delivered in the outbox, events the
provider never received (lost), events it received more than once, and whether each of those
was in a request on the wire when the worker died.

Usage: python benchmarks/queues.py [--orders N]. Needs PostgreSQL and Redis; writes
benchmarks/queues_results.json (a full run of 10,000 orders only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.queue_settings"

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

from benchmarks.common import clear_database, conversion  # noqa: E402
from benchmarks.sites import make_site  # noqa: E402
from django_conversions import track  # noqa: E402
from django_conversions.conf import conversions_settings  # noqa: E402
from django_conversions.models import ConversionEvent, EventStatus  # noqa: E402
from tests.celery_app import app as celery_app  # noqa: E402,F401  (the shop's app, as its web process loads it)
from tests.servers import Answer, recording_server  # noqa: E402

PER_TRANSACTION = 100
WORKERS = 2


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(1)  # the workers are stopped in ``finally`` blocks


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=10_000)
    args = parser.parse_args(argv)
    databases = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        results = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "orders": args.orders,
            "workers": WORKERS,
            "queues": [
                run_queue(name, args.orders, stopped_with)
                for name in ("rq", "celery")
                for stopped_with in (signal.SIGTERM, signal.SIGKILL)
            ],
        }
    finally:
        connections.close_all()
        teardown_databases(databases, verbosity=0)
    if args.orders == 10_000:
        (ROOT / "benchmarks" / "queues_results.json").write_text(
            json.dumps(results, indent=2) + "\n"
        )
    print(json.dumps(results, indent=2))


def worker_command(queue: str) -> list[str]:
    if queue == "rq":
        return [
            *("-m", "django", "rqworker", "default", "--with-scheduler"),
            *("--worker-class", "rq.worker.SimpleWorker"),
            *("--job-class", "django_tasks_rq.backend.Job"),
        ]
    return [
        *("-m", "celery", "-A", "tests.celery_app", "worker", "--pool=solo"),
        *("-Q", settings.BENCH_QUEUE, "-l", "WARNING"),
        *("--without-mingle", "--without-gossip", "--without-heartbeat"),
    ]


def start_worker(queue: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.queue_settings",
        PGDATABASE=connection.settings_dict["NAME"],
        PYTHONPATH=str(ROOT),
        CONVERSIONS_BENCH_TASK_BACKEND=queue,
    )
    return subprocess.Popen(
        [sys.executable, *worker_command(queue)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # killed with whatever it forks (RQ's scheduler)
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> bool:
    """Stop the worker with ``sig``; True when it ended within 30 s (else it is killed)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=30)
        ended = True
    except subprocess.TimeoutExpired:
        ended = False
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return ended


def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def delivered_count() -> int:
    return ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count()


def wait_until_idle(progress: Any, busy: Any, quiet: float, timeout: float) -> float:
    """Wait until ``busy()`` is false and ``progress()`` has not changed for ``quiet`` seconds;
    return when (``time.monotonic()``) it last changed."""
    deadline = time.monotonic() + timeout
    last, since = progress(), time.monotonic()
    while time.monotonic() < deadline and (busy() or time.monotonic() - since < quiet):
        time.sleep(0.2)
        now = progress()
        if now != last:
            last, since = now, time.monotonic()
    return since


def queued_messages(client: Any, queue: str) -> int:
    """Messages waiting in the queue's Redis list (not those a worker has taken)."""
    return int(client.llen("rq:queue:default" if queue == "rq" else settings.BENCH_QUEUE))


def forget_bench_keys(client: Any) -> None:
    """Delete the run's queues' keys in Redis (RQ's; the Celery queue's and the messages a
    killed Celery worker left unacknowledged), nothing else."""
    for pattern in ("rq:*", f"*{settings.BENCH_QUEUE}*", "unacked*", "_kombu.*"):
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)


def run_queue(queue: str, orders: int, stopped_with: signal.Signals) -> dict[str, Any]:
    clear_database()
    client = redis.Redis.from_url(settings.REDIS_URL)
    forget_bench_keys(client)
    with (
        override_settings(CONVERSIONS={**settings.CONVERSIONS, "TASK_BACKEND": queue}),
        recording_server(Answer(delay=0.05)) as server,
    ):
        make_site("scanova", server.url, 0)
        workers = [start_worker(queue) for _ in range(WORKERS)]
        killed_at = None
        ended_on_its_own = False
        started = time.monotonic()
        try:
            for start in range(0, orders, PER_TRANSACTION):
                with transaction.atomic():
                    for n in range(start, min(orders, start + PER_TRANSACTION)):
                        track(conversion(n))
                received = sum(server.event_id_counts().values())
                if killed_at is None and received >= orders // 3:
                    ended_on_its_own = stop(workers[0], stopped_with)
                    killed_at = received
            if killed_at is None:
                wait_for(lambda: sum(server.event_id_counts().values()) >= orders // 3, 300)
                ended_on_its_own = stop(workers[0], stopped_with)
                killed_at = sum(server.event_id_counts().values())
            # The surviving worker drains the queue (every message taken, then nothing delivered
            # for 5 s); what the killed one had claimed, and the messages it had taken (Celery
            # prefetches; unacknowledged, Redis hands them out again only after its visibility
            # timeout), wait for the sweep.
            last_delivery = wait_until_idle(
                delivered_count, lambda: queued_messages(client, queue) > 0, quiet=5.0, timeout=900
            )
            delivered_by_workers = last_delivery - started
            handed_over = time.monotonic() - started
            left_to_sweep = ConversionEvent.objects.exclude(status=EventStatus.DELIVERED).count()
            wait_for(lambda: not ConversionEvent.objects.held(timezone.now()).exists(), 120)
            call_command("conversions_deliver", verbosity=0)
            elapsed = time.monotonic() - started
        finally:
            for worker in workers:
                stop(worker)
        counts = server.event_id_counts()
    forget_bench_keys(client)
    client.close()
    ids = {str(e) for e in ConversionEvent.objects.values_list("event_id", flat=True)}
    twice = sorted(event_id for event_id, n in counts.items() if n > 1)
    return {
        "queue": queue,
        "worker_stopped_with": stopped_with.name,
        # SIGTERM: whether the worker ended within 30 s of it (else it was killed after all).
        "worker_ended_on_its_own": ended_on_its_own if stopped_with != signal.SIGKILL else None,
        "orders": orders,
        "delivered": ConversionEvent.objects.filter(status=EventStatus.DELIVERED).count(),
        "lost": len(ids - set(counts)),
        "sent_twice": len(twice),
        "sent_more_than_twice": sum(1 for n in counts.values() if n > 2),
        "received_when_killed": killed_at,
        # What the killed worker may have had on the wire: its requests in flight.
        "sent_twice_bound": conversions_settings.DELIVERY_CONCURRENCY
        * conversions_settings.BATCH_SIZE,
        # Until the workers' last delivery; then until every message was taken (those whose
        # events had gone out in another task's batch find nothing to send) and 5 s passed.
        "seconds_until_the_workers_last_delivered": round(delivered_by_workers, 1),
        "seconds_until_the_workers_were_done": round(handed_over, 1),
        "left_for_the_sweep": left_to_sweep,
        "seconds_total": round(elapsed, 1),
    }


if __name__ == "__main__":
    main()
