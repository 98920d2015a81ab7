"""Delivery health, read from the outbox: per active site, how many events are due, how long
the oldest has waited (the delivery lag) and how many failed.

Shared by ``manage.py conversions_status`` (whose exit code a monitor reads), the metrics
exposition (``django_conversions.metrics``) and the admin overview. Each site costs three
small queries on the outbox's indexes (the due index and the lease index lead with what they
filter on), whatever the size of the backlog's history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone

from django_conversions.models import ConversionEvent, EventStatus, TrackingSite


@dataclass
class SiteHealth:
    site: TrackingSite
    #: Events due now: pending and due, or claimed by a worker whose lease ran out.
    due: int
    #: Since when the oldest of them is due (None: nothing due).
    oldest_due_at: datetime | None
    #: Failed events kept in the outbox, and those among them that failed within the window.
    failed: int
    failed_recently: int

    def lag_seconds(self, now: datetime) -> float:
        """How long the oldest due event has waited (0 with nothing due)."""
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_due_at).total_seconds())


@dataclass
class Health:
    checked_at: datetime
    #: Failures counted as recent happened after this time.
    failed_since: datetime
    sites: list[SiteHealth] = field(default_factory=list)

    @property
    def lag_seconds(self) -> float:
        """The delivery lag: the age of the oldest due event of any active site."""
        return max((site.lag_seconds(self.checked_at) for site in self.sites), default=0.0)

    @property
    def due(self) -> int:
        return sum(site.due for site in self.sites)

    @property
    def failed_recently(self) -> int:
        return sum(site.failed_recently for site in self.sites)


def delivery_health(*, failed_window: float = 3600.0, now: datetime | None = None) -> Health:
    """The health of every active site (paused and held ones included: their events wait)."""
    now = now or timezone.now()
    health = Health(checked_at=now, failed_since=now - timedelta(seconds=failed_window))
    for site in TrackingSite.objects.filter(is_active=True).order_by("pk"):
        health.sites.append(site_health(site, now, health.failed_since))
    return health


def site_health(site: TrackingSite, now: datetime, failed_since: datetime) -> SiteHealth:
    events = ConversionEvent.objects.filter(site=site).order_by()
    pending = events.filter(status=EventStatus.PENDING, next_attempt_at__lte=now).aggregate(
        n=Count("pk"), oldest=Min("next_attempt_at")
    )
    expired = events.filter(status=EventStatus.SENDING, lease_expires_at__lt=now).aggregate(
        n=Count("pk"), oldest=Min("lease_expires_at")
    )
    failed = events.filter(status=EventStatus.FAILED).aggregate(
        n=Count("pk"), recent=Count("pk", filter=Q(updated_at__gte=failed_since))
    )
    oldest = [value for value in (pending["oldest"], expired["oldest"]) if value is not None]
    return SiteHealth(
        site=site,
        due=pending["n"] + expired["n"],
        oldest_due_at=min(oldest, default=None),
        failed=failed["n"],
        failed_recently=failed["recent"],
    )
