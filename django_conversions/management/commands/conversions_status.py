"""``manage.py conversions_status``: delivery health for a monitor, read from the outbox.

Prints one line per active site (events due, how long the oldest has waited, failures) and a
verdict. Exit status: 0 healthy; 2 when the delivery lag (age of the oldest due event of any
active site) is above ``--max-lag`` (``HEALTH_MAX_LAG``) or more than ``--max-failed``
(``HEALTH_MAX_FAILED``) events failed within ``--failed-window`` (``HEALTH_FAILED_WINDOW``);
1 when it could not check (the database unreachable, a bad option). A paused site shows here
as lag: its events wait.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.conf import conversions_settings
from django_conversions.health import Health, delivery_health

#: Exit status when a threshold is crossed (1 is Django's for an error while checking).
UNHEALTHY = 2


class Command(BaseCommand):
    help = (
        "Report delivery health (due events, delivery lag, failures per site); exit status 2 "
        "when past a threshold."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-lag",
            type=float,
            default=None,
            help="Seconds the oldest due event may wait (default: HEALTH_MAX_LAG).",
        )
        parser.add_argument(
            "--max-failed",
            type=int,
            default=None,
            help="Events that may fail within the window (default: HEALTH_MAX_FAILED).",
        )
        parser.add_argument(
            "--failed-window",
            type=float,
            default=None,
            help="Seconds back to count failures (default: HEALTH_FAILED_WINDOW).",
        )

    def handle(
        self,
        *args: Any,
        max_lag: float | None,
        max_failed: int | None,
        failed_window: float | None,
        **options: Any,
    ) -> None:
        max_lag = float(conversions_settings.HEALTH_MAX_LAG if max_lag is None else max_lag)
        if max_failed is None:
            max_failed = int(conversions_settings.HEALTH_MAX_FAILED)
        window = float(
            conversions_settings.HEALTH_FAILED_WINDOW if failed_window is None else failed_window
        )
        if max_lag <= 0 or max_failed < 0 or window <= 0:
            raise CommandError(
                "--max-lag and --failed-window must be positive, --max-failed 0 or more."
            )
        health = delivery_health(failed_window=window)
        for line in site_lines(health, window):
            self.stdout.write(line)
        problems = []
        if health.lag_seconds > max_lag:
            problems.append(f"delivery lag {health.lag_seconds:.0f} s > {max_lag:g} s")
        if health.failed_recently > max_failed:
            problems.append(
                f"{health.failed_recently} failed in the last {window:g} s > {max_failed}"
            )
        summary = (
            f"delivery lag {health.lag_seconds:.0f} s (max {max_lag:g} s), {health.due} due, "
            f"{health.failed_recently} failed in the last {window:g} s (max {max_failed})"
        )
        if problems:
            self.stdout.write(self.style.ERROR(f"UNHEALTHY: {'; '.join(problems)}"))
            sys.exit(UNHEALTHY)
        self.stdout.write(self.style.SUCCESS(f"OK: {summary}"))


def site_lines(health: Health, window: float) -> list[str]:
    if not health.sites:
        return ["No active site."]
    lines = []
    for item in health.sites:
        state = " (paused)" if item.site.is_paused else ""
        lines.append(
            f"site {item.site.pk} {item.site.name!r} ({item.site.provider}){state}: "
            f"{item.due} due, oldest waiting {item.lag_seconds(health.checked_at):.0f} s, "
            f"{item.failed_recently} failed in the last {window:g} s ({item.failed} kept)"
        )
    return lines
