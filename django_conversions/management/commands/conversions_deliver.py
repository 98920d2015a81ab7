"""``manage.py conversions_deliver``: send everything that is due, then exit (or keep polling).

This is the sweep that makes delivery independent of the task queue: whatever a task never
delivered (a lost enqueue, a killed worker whose lease expired, no task backend at all) is due
here. It also reconciles: orders the adapter says are conversions but that have no event (their
outbox write was lost) are recorded, at most once a minute with ``--loop``. Run it from cron, or
as a service with ``--loop``; any number may run at once.

With ``--loop`` the worker outlives its database connection: a poll that fails on a lost or
refused connection is logged, the connection dropped, and the poll tried again after a pause
that doubles up to ``MAX_BACKOFF`` seconds. SIGTERM or SIGINT stops it within one request
deadline: no new request is sent, the answers in flight are recorded, and it exits with 0.
A second signal ends it at once (the events in flight then return to others after the lease).
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from django_conversions.conf import conversions_settings
from django_conversions.delivery import DeliveryReport
from django_conversions.sweep import sweep
from django_conversions.tasks import background

logger = logging.getLogger("django_conversions.worker")

#: Shortest and longest pause between polls while the database can't be reached, in seconds.
MIN_BACKOFF = 0.5
MAX_BACKOFF = 60.0
#: Seconds between two reconciliations of a looping worker.
RECONCILE_EVERY = 60.0


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
        self.stopping = False
        self.verbosity = options["verbosity"]
        self.reconciled_at: float | None = None
        settle_process()
        if loop:
            signal.signal(signal.SIGTERM, self._stop)
            signal.signal(signal.SIGINT, self._stop)
        total = DeliveryReport()
        failures = 0
        while True:
            left = None if max_events is None else max_events - total.handled
            try:
                report = self._poll(left, loop)
            except (OperationalError, InterfaceError) as err:
                if not loop:
                    raise
                # A lost or refused connection: drop it; the next poll opens a new one.
                failures += 1
                pause = min(MAX_BACKOFF, max(interval, MIN_BACKOFF) * 2 ** (failures - 1))
                logger.warning(
                    "Database unavailable (%s); polling again in %.1f s", _first_line(err), pause
                )
                connections.close_all()
                self._sleep(pause)
            else:
                failures = 0
                total.add(report)
                if report.handled and options["verbosity"] >= 1:
                    self.stdout.write(f"{time.strftime('%H:%M:%S')} {report}")
                done = max_events is not None and total.handled >= max_events
                if not loop or done or self.stopping:
                    break
                self._sleep(interval)
            if self.stopping:
                break
        # Events this process recorded by reconciling may be with its background delivery
        # thread (an ImmediateBackend): let what it has in flight be recorded too.
        background.wait_idle(timeout=float(conversions_settings.REQUEST_DEADLINE) + 5)
        if options["verbosity"] >= 1:
            self.stdout.write(self.style.SUCCESS(f"Total: {total}"))

    def _poll(self, max_events: int | None, loop: bool) -> DeliveryReport:
        if loop:
            close_old_connections()  # as Django does between requests (CONN_MAX_AGE, errors)
        now = time.monotonic()
        reconciling = self.reconciled_at is None or now - self.reconciled_at >= RECONCILE_EVERY
        recorded, report = sweep(
            reconciling=reconciling, max_events=max_events, should_stop=self._should_stop
        )
        if reconciling:
            self.reconciled_at = now
        if recorded and self.verbosity >= 1:
            self.stdout.write(f"Recorded {recorded} conversion(s) whose outbox write was lost")
        return report

    def _should_stop(self) -> bool:
        return self.stopping

    def _stop(self, signum: int, frame: Any) -> None:
        # Finish what is in flight and record it; a second signal ends the process at once.
        # Only a flag is set here: a handler that took a lock could find it held by the very
        # code it interrupted.
        self.stopping = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less once a stop is asked for."""
        until = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < until:
            time.sleep(max(0.0, min(0.1, until - time.monotonic())))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def settle_process() -> None:
    """Set up a long-running delivery process once everything is loaded.

    Django, the apps and their modules live as long as the process: freezing them keeps them
    out of the garbage collector's full passes, which would otherwise walk all of it every
    few thousand events sent. Once per process: what a later call would freeze could include
    garbage never collected.
    """
    global _settled
    if not _settled:
        gc.freeze()
        _settled = True


_settled = False
