"""``manage.py conversions_sandbox_setup``: sandbox accounts and keys, optionally wired to sites."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_conversions.contrib.sandbox import control
from django_conversions.fields import mask_secret


class Command(BaseCommand):
    help = (
        "Create the sandbox's provider accounts and API keys (once; re-running keeps them). "
        "With --connect BASE_URL also create or update one tracking site per provider that "
        "sends to the sandbox mounted at BASE_URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scanova-site-id",
            default=control.DEFAULT_SCANOVA_SITE_ID,
            help="The Scanova site_id the sandbox knows (default: %(default)s).",
        )
        parser.add_argument(
            "--connect",
            metavar="BASE_URL",
            help="Where the sandbox URLs are mounted, e.g. http://127.0.0.1:8000/sandbox; "
            "creates the tracking sites 'Scanova (sandbox)' and 'VTmarketing (sandbox)'.",
        )
        parser.add_argument(
            "--show-keys",
            action="store_true",
            help="Print the sandbox API keys in full (to paste them into the admin).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = control.ensure_accounts(options["scanova_site_id"])
        for account in accounts.values():
            key = account.key if options["show_keys"] else mask_secret(account.key)
            site_id = f" site_id={account.site_id}" if account.site_id else ""
            self.stdout.write(f"{account.provider:<12}{site_id} key={key}")
        if options["connect"]:
            for site in control.connect_tracking_sites(options["connect"], accounts):
                self.stdout.write(f"tracking site {site.name!r} → {site.endpoint_url}")
        self.stdout.write(self.style.SUCCESS("Sandbox ready."))
