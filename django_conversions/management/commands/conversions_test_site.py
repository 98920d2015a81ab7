"""``manage.py conversions_test_site <site>``: send one test event and print the answer.

The same check as the admin's "send test event" action, for shells and deploy scripts: it exits
non-zero when the provider did not accept the event (or nothing could be sent).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_conversions.models import TrackingSite
from django_conversions.testevent import send_test_event


class Command(BaseCommand):
    help = (
        "Send one synthetic test conversion to a tracking site with its current API key and "
        "print the provider's answer (HTTP status, reason, response body)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site", help="The tracking site's id or name.")

    def handle(self, *args: Any, site: str, **options: Any) -> None:
        tracking_site = find_site(site)
        answer = send_test_event(tracking_site)
        if answer.sent:
            self.stdout.write(f"POST {answer.url}")
        self.stdout.write(answer.summary())
        if answer.body:
            self.stdout.write(f"Response body: {answer.body}")
        if not answer.accepted:
            raise CommandError("The test event was not accepted.")
        self.stdout.write(self.style.SUCCESS("The provider accepted the test event."))


def find_site(reference: str) -> TrackingSite:
    """The site with this id, else with this name (exact, then case-insensitive)."""
    reference = reference.strip()
    if reference.isdigit():
        found = TrackingSite.objects.filter(pk=int(reference)).first()
        if found is not None:
            return found
    for lookup in ("name", "name__iexact"):
        matches = list(TrackingSite.objects.filter(**{lookup: reference})[:10])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            ids = ", ".join(f"{s.pk} ({s.provider})" for s in matches)
            raise CommandError(f"Several sites are named {reference!r}; give the id: {ids}.")
    known = ", ".join(f"{s.pk}: {s.name}" for s in TrackingSite.objects.all()[:20]) or "none"
    raise CommandError(f"No tracking site with id or name {reference!r}. Sites: {known}.")
