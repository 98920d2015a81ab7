"""``manage.py conversions_forget --email ADDRESS``: erase one customer's personal data."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.privacy import forget_customer


class Command(BaseCommand):
    help = "Remove a customer's personal data from every stored conversion event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", help="The customer's email address.")
        parser.add_argument("--phone", help="The customer's phone number.")
        parser.add_argument("--dry-run", action="store_true", help="Only count the matches.")

    def handle(
        self, *args: Any, email: str | None, phone: str | None, dry_run: bool, **options: Any
    ) -> None:
        if not (email or phone):
            raise CommandError("Give --email and/or --phone.")
        report = forget_customer(email=email, phone=phone, dry_run=dry_run)
        verb = "Would scrub" if dry_run else "Scrubbed"
        # The address itself is not echoed: terminal scrollback and CI logs are kept too.
        self.stdout.write(f"{verb} the customer's data from {report}.")
