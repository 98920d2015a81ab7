"""``manage.py conversions_retry``: after a configuration fix, send again what was skipped or
failed, in bulk.

Selects skipped and failed events (``--status``), optionally of some sites (``--site``, id or
name), orders (``--order``, the order number shown in the admin) and creation times
(``--since`` / ``--until``). Each is retried by the rule the admin's "retry now" follows
(``actions.retry_events``): its conversion is rebuilt from its order with the adapter and
settings as they are now, a skipped one is judged again by its provider (still ineligible: it
stays skipped with the reason), and the rest become pending and due now, queued for delivery
after commit. A delivered event is never sent again (``ConversionEvent.is_resendable``), nor
one a worker is sending.

``--dry-run`` rebuilds and judges in memory only, and prints what a run would do.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_conversions.actions import retry_changes, retry_events
from django_conversions.models import ConversionEvent, EventStatus

RETRIED = (EventStatus.FAILED, EventStatus.SKIPPED)


class Command(BaseCommand):
    help = (
        "Retry skipped and failed events after a configuration fix: rebuild them from their "
        "orders, judge skipped ones again, and queue what can be sent. Never resends a "
        "delivered event."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--status",
            action="append",
            choices=[str(status) for status in RETRIED],
            help="Only events in this status (repeatable; default: failed and skipped).",
        )
        parser.add_argument(
            "--site", action="append", help="Only this tracking site, by id or name (repeatable)."
        )
        parser.add_argument("--order", action="append", help="Only this order number (repeatable).")
        parser.add_argument(
            "--since", help="Only events created at or after this date or ISO date-time."
        )
        parser.add_argument("--until", help="Only events created before this date or date-time.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Only show what would be done; change nothing."
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        events = self.selected(**options)
        total = events.count()
        if not total:
            self.stdout.write("No skipped or failed event matches.")
            return
        if dry_run:
            self.stdout.write(f"Would retry {total} events: {self.preview(events)}.")
            return
        outcome = retry_events(events)
        self.stdout.write(f"Retried {total} events: {outcome.summary()}.")

    def selected(
        self,
        *,
        status: list[str] | None,
        site: list[str] | None,
        order: list[str] | None,
        since: str | None,
        until: str | None,
        **options: Any,
    ) -> QuerySet[ConversionEvent]:
        events = ConversionEvent.objects.filter(status__in=status or RETRIED)
        if site:
            ids = [value for value in site if value.isdigit()]
            events = events.filter(Q(site__name__in=site) | Q(site__pk__in=ids))
        if order:
            events = events.filter(order_reference__in=order)
        if since:
            events = events.filter(created_at__gte=_moment(since, "--since"))
        if until:
            events = events.filter(created_at__lt=_moment(until, "--until"))
        return events.select_related("site").order_by("pk")

    def preview(self, events: QuerySet[ConversionEvent]) -> str:
        """What a run would make of each event, rebuilt and judged in memory."""
        now = timezone.now()
        results: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for event in events.iterator(chunk_size=500):
            if not event.is_resendable(now):
                results["left alone (being sent right now)"] += 1
                continue
            changes = retry_changes(event, now)
            if changes["status"] == EventStatus.PENDING:
                results["queued for delivery"] += 1
            elif changes["status"] == EventStatus.SKIPPED:
                results["still not eligible (stay skipped)"] += 1
                reasons[str(changes["last_error"])] += 1
            else:
                results["could not be rebuilt from their orders (failed)"] += 1
                reasons[str(changes["last_error"])] += 1
        text = "; ".join(f"{count} {what}" for what, count in results.most_common())
        if reasons:
            why = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common(5))
            text += f" — reasons: {why}"
        return text


def _moment(value: str, option: str) -> datetime:
    """A date-time from ``2026-12-01`` or ``2026-12-01T10:00[:00][+01:00]``, in the current time
    zone when it names none."""
    try:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            moment = None if day is None else datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"{option} {value!r} is not a date (2026-12-01) or ISO date-time.")
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment
