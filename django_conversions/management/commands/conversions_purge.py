"""``manage.py conversions_purge``: the retention policy, safe to run from cron.

Scrubs personal data from finished events older than ``SCRUB_AFTER_DAYS`` (and from the
requests that carried them) and deletes finished events older than ``RETENTION_DAYS`` with the
attempts only they used, and attempts older than that; pending events are never deleted. Works
in batches of 1,000 rows (``--batch-size``), each in its own short transaction (see
``django_conversions.privacy``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.conf import conversions_settings
from django_conversions.privacy import BATCH, purge_old_events, scrub_old_events


class Command(BaseCommand):
    help = (
        "Scrub personal data from old events and their requests, and delete events and "
        "attempts past the retention period."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be scrubbed and deleted."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH,
            help=f"Rows per transaction (default {BATCH}); smaller holds each lock for less.",
        )

    def handle(self, *args: Any, dry_run: bool, batch_size: int, **options: Any) -> None:
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        verb = "Would" if dry_run else "Did"
        scrubbed = scrub_old_events(dry_run=dry_run, batch_size=batch_size)
        self.stdout.write(
            f"{verb} scrub personal data older than {conversions_settings.SCRUB_AFTER_DAYS} days: "
            f"{scrubbed}"
        )
        purged = purge_old_events(dry_run=dry_run, batch_size=batch_size)
        self.stdout.write(
            f"{verb} delete events older than {conversions_settings.RETENTION_DAYS} days: {purged}"
        )
