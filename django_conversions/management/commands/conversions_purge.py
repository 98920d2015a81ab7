"""``manage.py conversions_purge``: the retention policy, safe to run from cron.

Scrubs personal data from finished events older than ``SCRUB_AFTER_DAYS`` (and from the
requests that carried them) and deletes finished events older than ``RETENTION_DAYS`` with the
attempts only they used, and attempts older than that; pending events are never deleted. Works
in batches of 1,000 rows, each in its own transaction (see ``django_conversions.privacy``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_conversions.conf import conversions_settings
from django_conversions.privacy import purge_old_events, scrub_old_events


class Command(BaseCommand):
    help = (
        "Scrub personal data from old events and their requests, and delete events and "
        "attempts past the retention period."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be scrubbed and deleted."
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        verb = "Would" if dry_run else "Did"
        scrubbed = scrub_old_events(dry_run=dry_run)
        self.stdout.write(
            f"{verb} scrub personal data older than {conversions_settings.SCRUB_AFTER_DAYS} days: "
            f"{scrubbed}"
        )
        purged = purge_old_events(dry_run=dry_run)
        self.stdout.write(
            f"{verb} delete events older than {conversions_settings.RETENTION_DAYS} days: {purged}"
        )
