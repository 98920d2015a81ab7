"""``manage.py conversions_sandbox_fault PROVIDER MODE``: flip a sandbox fault switch."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.contrib.sandbox import control
from django_conversions.contrib.sandbox.models import FaultMode, Provider


class Command(BaseCommand):
    help = (
        "Make the sandbox misbehave for one provider (or 'all'): "
        + ", ".join(FaultMode.values)
        + ". 'off' restores normal answers."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("provider", choices=[*Provider.values, "all"])
        parser.add_argument("mode", choices=FaultMode.values)
        parser.add_argument("--status", type=int, help="Status code (server_error, reject).")
        parser.add_argument("--retry-after", type=int, help="Retry-After seconds (rate_limit).")
        parser.add_argument("--delay", type=float, help="Seconds before answering (slow).")
        parser.add_argument(
            "--times", type=int, help="Only for the next N requests (default: until 'off')."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        providers = Provider.values if options["provider"] == "all" else [options["provider"]]
        for provider in providers:
            if options["mode"] == FaultMode.OFF:
                control.clear_faults(provider)
                self.stdout.write(f"{provider}: answering normally")
                continue
            try:
                fault = control.set_fault(
                    provider,
                    options["mode"],
                    status_code=options["status"],
                    retry_after=options["retry_after"],
                    delay=options["delay"],
                    times=options["times"],
                )
            except ValueError as err:
                raise CommandError(str(err)) from err
            scope = f"next {fault.remaining} requests" if fault.remaining else "until 'off'"
            self.stdout.write(f"{provider}: {fault.get_mode_display()} ({scope})")
