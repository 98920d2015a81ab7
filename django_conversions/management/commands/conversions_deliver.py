"""``manage.py conversions_deliver``: send everything that is due, then exit (or keep polling).

This is the sweep that makes delivery independent of the task queue: whatever a task never
delivered (a lost enqueue, a killed worker whose lease expired, no task backend at all) is due
here. Run it from cron, or as a service with ``--loop``; any number may run at once.
"""

from __future__ import annotations

import gc
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_conversions.delivery import DeliveryReport, deliver_due
from django_conversions.tasks import schedule_retries


class Command(BaseCommand):
    help = "Deliver due conversion events to their providers (drain and exit, or --loop)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Keep polling until stopped (SIGINT/SIGTERM)."
        )
        parser.add_argument(
            "--interval", type=float, default=2.0, help="Seconds between polls with --loop."
        )
        parser.add_argument(
            "--max-events", type=int, default=None, help="Stop after handling this many events."
        )

    def handle(
        self, *args: Any, loop: bool, interval: float, max_events: int | None, **options: Any
    ) -> None:
        self._stopping = False
        settle_process()
        if loop:
            # Finish the request in flight, record it, then stop: nothing is left "sending".
            signal.signal(signal.SIGTERM, self._stop)
            signal.signal(signal.SIGINT, self._stop)
        total = DeliveryReport()
        while True:
            report = deliver_due(
                max_events=None if max_events is None else max_events - total.handled
            )
            schedule_retries(report.retry_at)
            total.add(report)
            if report.handled and options["verbosity"] >= 1:
                self.stdout.write(f"{time.strftime('%H:%M:%S')} {report}")
            done = max_events is not None and total.handled >= max_events
            if not loop or done or self._stopping:
                break
            self._sleep(interval)
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(f"Total: {total}"))

    def _stop(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))


def settle_process() -> None:
    """Set up a long-running delivery process once everything is loaded.

    Django, the apps and their modules live as long as the process: freezing them keeps them
    out of the garbage collector's full passes, which would otherwise walk all of it every
    few thousand events sent (each pass took as long as sending ~400 batched events).
    Once per process: what a later call would freeze could include garbage never collected.
    """
    global _settled
    if not _settled:
        gc.freeze()
        _settled = True


_settled = False
