"""Claims: which worker sends which due events, under a lease fenced by a claim token.

A claim marks events ``sending`` with a fresh token and a lease (``LEASE_SECONDS``); every
later write about them names the token, so a worker whose lease ran out and was taken over
changes nothing of the new holder's (see ``Lease.renew`` and the recorder).

Claims go site by site, over the sites that may send (active, not paused, not held), reading
each site's due events in the due index's order (site, status, next_attempt_at, id): a claim
reads about as many index entries as it takes, however large the backlog or however it is
shaped (100k events due at the same instant, a paused site's 100k ahead of an active one's).

Where the database can (``features.has_select_for_update_skip_locked``), the due rows are
locked with ``SELECT … FOR UPDATE SKIP LOCKED`` and marked in the same transaction, so
concurrent workers take disjoint sets without waiting. Elsewhere the marking UPDATE repeats
the conditions that made the rows due (a compare-and-set): a row another worker took in
between is no longer due and stays theirs.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from django_conversions.conf import conversions_settings
from django_conversions.models import ConversionEvent, EventStatus, TrackingSite
from django_conversions.normalize import storable_text

#: Share of the lease a site's claimed events may take to send, with every request taking its
#: whole deadline: the rest is margin for recording and for the renewals themselves.
LEASE_SHARE = 0.5
#: Seconds of lease kept in reserve for clocks of different machines that differ a little.
LEASE_MARGIN = 5.0
#: Most rows one claiming statement names (well under SQLite's 999 bound variables).
STATEMENT_ROWS = 500


@dataclass
class SiteClaim:
    """One site's claimed events, oldest due first."""

    site: TrackingSite
    events: list[ConversionEvent] = field(default_factory=list)
    #: Did the site have as many due events as were asked of it (more may be waiting)?
    more_due: bool = False


@dataclass
class Lease:
    """The events one claim took, and the token that fences every write about them."""

    token: uuid.UUID
    using: str
    #: When the lease written by the claim runs out (``renew`` extends it event by event).
    expires_at: datetime
    sites: list[SiteClaim] = field(default_factory=list)
    #: Did some site have as many due events as were asked of it (more may be waiting)?
    more_due: bool = False
    _renewed: dict[int, datetime] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return sum(len(site.events) for site in self.sites)

    @property
    def events(self) -> list[ConversionEvent]:
        return [event for site in self.sites for event in site.events]

    def held(self, event_ids: Iterable[int]) -> QuerySet[ConversionEvent]:
        """These events, as far as this claim still holds them."""
        return ConversionEvent.objects.using(self.using).filter(
            pk__in=list(event_ids), claim_token=self.token, status=EventStatus.SENDING
        )

    def still_held(self, event_ids: Iterable[int], needed: float = 0.0) -> set[int]:
        """Those of these events this claim holds, for at least ``needed`` more seconds.

        Another worker takes an event over only once its lease has run out. While the lease
        we wrote runs for ``needed`` seconds plus ``LEASE_MARGIN`` (clocks of different
        machines differ a little), every event is provably still ours and nothing is read
        or written; otherwise the lease is renewed and re-checked (``renew``).
        """
        ids = set(event_ids)
        if not ids:
            return set()
        soonest = min(self._renewed.get(pk, self.expires_at) for pk in ids)
        if (soonest - timezone.now()).total_seconds() > needed + LEASE_MARGIN:
            return ids
        return self.renew(ids)

    def renew(self, event_ids: Iterable[int]) -> set[int]:
        """Extend the lease of these events; return those this claim still holds.

        An event another worker took over (our lease ran out while we were busy elsewhere) is
        not in the answer: it must not be sent, and nothing about it may be written. Inside a
        transaction, the update also takes the rows' write locks before anything is read.
        """
        ids = set(event_ids)
        if not ids:
            return set()
        expires_at = timezone.now() + lease_duration()
        renewed = self.held(ids).update(lease_expires_at=expires_at)
        # When some were taken over: those just renewed can't be (their lease runs), so
        # reading which ones are still held after the update is exact.
        still = ids if renewed == len(ids) else set(self.held(ids).values_list("pk", flat=True))
        self._renewed.update(dict.fromkeys(still, expires_at))
        return still

    def take_more(self, site: TrackingSite, ids: Sequence[int] | None = None) -> SiteClaim:
        """Claim the site's next due events under this claim's token, while the events taken
        before are still being sent: a site that keeps up never waits for another site's
        slow answers, and its requests stay in flight without a gap between claims."""
        now = timezone.now()
        expires_at = now + lease_duration()
        wanted = _site_room(site)
        got = _claim_site(self, site, wanted, now, ids, has_expired=False, expires_at=expires_at)
        self._renewed.update(dict.fromkeys((event.pk for event in got), expires_at))
        return SiteClaim(site, got, more_due=len(got) == wanted)

    def release(
        self, events: Sequence[ConversionEvent], reason: str, not_before: datetime | None = None
    ) -> int:
        """Give unsent events back: pending, their attempts unchanged, with the reason they
        wait. Only those this claim still holds; returns how many."""
        if not events:
            return 0
        return self.held(event.pk for event in events).update(
            status=EventStatus.PENDING,
            claim_token=None,
            lease_expires_at=None,
            last_error=storable_text(reason),
            next_attempt_at=not_before or timezone.now(),
            updated_at=timezone.now(),
        )


def lease_duration() -> timedelta:
    return timedelta(seconds=conversions_settings.LEASE_SECONDS)


def request_seconds() -> float:
    """The longest one request may take, connecting to its last byte."""
    return float(conversions_settings.REQUEST_DEADLINE)


def site_claim_size(batch_size: int) -> int:
    """Most events to claim for one site so that sending all of them, each request taking its
    whole deadline, fits in ``LEASE_SHARE`` of the lease."""
    concurrency = max(1, conversions_settings.DELIVERY_CONCURRENCY)
    budget = conversions_settings.LEASE_SECONDS * LEASE_SHARE * concurrency
    requests = max(1, int(budget // max(request_seconds(), 0.001)))
    return requests * max(1, batch_size)


def site_claim_step(batch_size: int) -> int:
    """Events one claim takes for a site: one round of requests (``DELIVERY_CONCURRENCY``
    full batches), within ``site_claim_size``. The sender claims the next round as soon as
    one is all on the wire (``Lease.take_more``), so a worker holds at most two rounds, and
    several workers share a backlog of any size instead of the first one taking it all."""
    concurrency = max(1, conversions_settings.DELIVERY_CONCURRENCY)
    return min(site_claim_size(batch_size), concurrency * max(1, batch_size))


def sendable_sites(using: str, now: datetime) -> QuerySet[TrackingSite]:
    """Sites that may be sent to now: active, not paused, not held back."""
    return TrackingSite.objects.using(using).sendable(now).order_by("pk")


def claim(limit: int, event_ids: Iterable[int] | None = None) -> Lease:
    """Take up to ``limit`` due events, shared fairly between the sendable sites.

    Per site, events whose lease expired (a crashed worker's) come first, then pending events
    oldest due first. ``event_ids`` restricts the claim to those events (after commit, a
    scheduled retry).
    """
    using = router.db_for_write(ConversionEvent)
    now = timezone.now()
    lease = Lease(uuid.uuid4(), using, now + lease_duration())
    ids = None if event_ids is None else list(event_ids)
    sites = sendable_sites(using, now)
    if ids is not None:
        named = ConversionEvent.objects.using(using).filter(pk__in=ids)
        sites = sites.filter(pk__in=named.values("site_id"))
    candidates = list(sites)
    if not candidates or limit <= 0:
        return lease
    expired = set(sites_with_expired_leases(using, now))
    taken: dict[int, SiteClaim] = {}
    remaining = limit
    share = math.ceil(limit / len(candidates))
    for first_pass in (True, False):
        for site in candidates:
            if remaining <= 0:
                break
            current = taken.setdefault(site.pk, SiteClaim(site))
            room = _site_room(site) - len(current.events)
            wanted = min(remaining, room, share) if first_pass else min(remaining, room)
            if wanted <= 0 or (not first_pass and len(current.events) < share):
                continue  # the second pass only tops up sites that filled their share
            got = _claim_site(lease, site, wanted, now, ids, site.pk in expired)
            current.events += got
            current.more_due = len(got) == wanted
            remaining -= len(got)
            lease.more_due = lease.more_due or current.more_due
    if ids is not None:
        for current in taken.values():
            _fill_last_batch(lease, current, now)
    lease.sites = [claim for claim in taken.values() if claim.events]
    return lease


def _fill_last_batch(lease: Lease, current: SiteClaim, now: datetime) -> None:
    """Named events of a site that takes batches go out with the site's other due events, up
    to a full batch: orders committed one by one, each handing over its own events, reach the
    provider in batches once they come faster than requests return (and under its request
    limit), and the tasks of the events taken along find nothing left to send."""
    short = -len(current.events) % _batch_size(current.site)
    if current.events and short:
        current.events += _claim_site(lease, current.site, short, now, None, has_expired=False)


def sites_with_expired_leases(using: str, now: datetime) -> QuerySet[ConversionEvent, int]:
    """Sites holding a crashed worker's events, read from the lease index (few rows are ever
    ``sending``), so the other sites' claims skip that queue."""
    return (
        ConversionEvent.objects.using(using)
        .filter(status=EventStatus.SENDING, lease_expires_at__lt=now)
        .values_list("site_id", flat=True)
        .distinct()
    )


def _site_room(site: TrackingSite) -> int:
    """Events to claim for the site at a time (``site_claim_step``)."""
    return site_claim_step(_batch_size(site))


def _batch_size(site: TrackingSite) -> int:
    """Events the site's provider takes in one request."""
    try:
        provider = site.provider_instance()
    except Exception:  # an unknown provider: the sender pauses the site with the reason
        return 1
    return max(1, provider.site.batch_size) if provider.supports_batch else 1


def _claim_site(
    lease: Lease,
    site: TrackingSite,
    wanted: int,
    now: datetime,
    ids: Sequence[int] | None,
    has_expired: bool,
    expires_at: datetime | None = None,
) -> list[ConversionEvent]:
    queues = [due_events(lease.using, site, now)]
    if has_expired:
        queues.insert(0, expired_leases(lease.using, site, now))
    events: list[ConversionEvent] = []
    for queue in queues:
        if ids is not None:
            queue = queue.filter(pk__in=ids)
        while len(events) < wanted:
            n = min(wanted - len(events), STATEMENT_ROWS)
            got = _mark(lease, queue, n, expires_at or lease.expires_at)
            events += got
            if len(got) < n:
                break
    for event in events:
        event.site = site  # one site object for its events, read with the claim
    return events


def expired_leases(using: str, site: TrackingSite, now: datetime) -> QuerySet[ConversionEvent]:
    """A crashed worker's events: still ``sending`` after their lease ran out."""
    return (
        ConversionEvent.objects.using(using)
        .filter(site=site, status=EventStatus.SENDING, lease_expires_at__lt=now)
        .order_by("lease_expires_at", "pk")
    )


def due_events(using: str, site: TrackingSite, now: datetime) -> QuerySet[ConversionEvent]:
    """Pending events due now, in the due index's order."""
    return (
        ConversionEvent.objects.using(using)
        .filter(site=site, status=EventStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
    )


def _mark(
    lease: Lease, due: QuerySet[ConversionEvent], n: int, expires_at: datetime
) -> list[ConversionEvent]:
    """Mark up to ``n`` rows of ``due`` as this claim's; return them as marked, in ``due``'s
    order."""
    values = {
        "status": EventStatus.SENDING,
        "claim_token": lease.token,
        "lease_expires_at": expires_at,
    }
    if connections[lease.using].features.has_select_for_update_skip_locked:
        # The locked rows are read whole: they are the claim, with no second read.
        with transaction.atomic(using=lease.using):
            events = list(due.select_for_update(skip_locked=True, of=("self",))[:n])
            if events:
                ConversionEvent.objects.using(lease.using).filter(
                    pk__in=[event.pk for event in events]
                ).update(**values)
        for event in events:
            for name, value in values.items():
                setattr(event, name, value)
        return events
    ids = list(due.values_list("pk", flat=True)[:n])
    if not ids:
        return []
    # Compare-and-set: ``due`` repeats what made the rows due, so a row another worker
    # marked since the read above is left alone.
    due.order_by().filter(pk__in=ids).update(**values)
    return list(lease.held(ids).order_by("next_attempt_at", "pk"))
