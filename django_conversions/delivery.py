"""Delivery: claim due events, send them through their provider, record, schedule.

This module is the one place for the delivery policy. Providers say what an answer means
(``Outcome``); here it becomes a status: delivered, retried later with exponential backoff and
jitter (never sooner than the provider's Retry-After), failed for good, skipped, or the whole
site paused (a refused API key) or held back (429, or our own rate budget running out).

Claims are safe with many workers on many machines: ``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, a compare-and-set UPDATE elsewhere. A claim is a lease: if the worker dies, the
events become due again when ``LEASE_SECONDS`` have passed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_conversions import bulk, http
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.models import (
    ApiKey,
    ConversionEvent,
    DeliveryAttempt,
    EventStatus,
    TrackingSite,
)
from django_conversions.privacy import redact_personal
from django_conversions.providers.base import (
    OutboundEvent,
    Outcome,
    Provider,
    Result,
)
from django_conversions.signals import event_delivered, event_failed

logger = logging.getLogger("django_conversions.delivery")

RATE_WINDOW = timedelta(minutes=1)
#: Seconds after a site took a request during which a worker skips the one-request probe.
ACCEPTED_FOR = 60.0


@dataclass
class DeliveryReport:
    """Counts of what a delivery run did, by what happened to each event."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    deferred: int = 0  # not sent: site paused or held back; still pending
    retry_at: list[tuple[int, datetime]] = field(default_factory=list)

    def add(self, other: DeliveryReport) -> None:
        for name in ("delivered", "retrying", "failed", "skipped", "deferred"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.retry_at.extend(other.retry_at)

    @property
    def handled(self) -> int:
        return self.delivered + self.retrying + self.failed + self.skipped + self.deferred

    def __str__(self) -> str:
        return (
            f"delivered {self.delivered}, retrying {self.retrying}, failed {self.failed}, "
            f"skipped {self.skipped}, deferred {self.deferred}"
        )


# --- the retry policy ------------------------------------------------------------------------


def retry_delay(
    attempts: int, retry_after: float | None = None, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt.

    The schedule (``RETRY_SCHEDULE``) gives the base wait, its last step repeating; jitter adds
    up to ``RETRY_JITTER`` of it so that events failing together don't retry together; a
    provider's Retry-After is a floor.
    """
    schedule = list(conversions_settings.RETRY_SCHEDULE) or [60]
    base = float(schedule[min(max(attempts, 1), len(schedule)) - 1])
    delay = base * (1 + conversions_settings.RETRY_JITTER * rand())
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def gives_up(event: ConversionEvent, next_attempt_at: datetime) -> bool:
    """Retry until RETRY_MAX_AGE after the event was recorded, then fail it."""
    deadline = event.created_at + timedelta(seconds=conversions_settings.RETRY_MAX_AGE)
    return next_attempt_at > deadline


# --- claiming --------------------------------------------------------------------------------


def _sendable_sites(now: datetime) -> Q:
    return Q(site__is_active=True, site__paused_at__isnull=True) & (
        Q(site__held_until__isnull=True) | Q(site__held_until__lte=now)
    )


def claim(limit: int, event_ids: Iterable[int] | None = None) -> list[ConversionEvent]:
    """Take up to ``limit`` due events for this worker, marking them ``sending`` with a lease.

    Expired leases (a crashed worker's events) come first, then pending events oldest due
    first. Each is its own query in index order, so a claim reads about ``limit`` index
    entries however long the backlog (one query with an OR had to sort every due row). Where
    the database can, the UPDATE that marks the events also returns what sending needs.
    """
    now = timezone.now()
    using = router.db_for_write(ConversionEvent)
    events = ConversionEvent.objects.using(using)
    values = {
        "now": now,
        "token": uuid.uuid4(),
        "lease": now + timedelta(seconds=conversions_settings.LEASE_SECONDS),
    }
    claim_values = _claim_values(values)
    locking = connections[using].features.has_select_for_update_skip_locked
    whole = _whole_rows_wanted()
    ids = None if event_ids is None else list(event_ids)
    taken = 0
    returned: list[tuple[Any, ...]] = []  # what sending needs, where the UPDATE returns rows
    # One UPDATE … WHERE pk IN (SELECT … LIMIT n) per queue: the database picks and marks the
    # rows in one statement, so no list of ids travels through Python. On SQLite the statement
    # holds the write lock from its first read, which makes it the compare-and-set: a row
    # another worker took meanwhile is no longer due when the subquery reads it. PostgreSQL
    # locks the rows the subquery picks, skipping those another worker holds.
    with transaction.atomic(using=using) if locking else nullcontext():
        for queue in _QUEUES:
            marking = _Marking(using, queue, limit - taken, locking, ids)
            rows = None if whole else marking.returning(values)
            if rows is None:
                taken += marking.queryset(values).update(**claim_values)
            else:
                returned += sorted(rows)  # by pk: oldest first within the queue
                taken += len(rows)
            if taken >= limit:
                break
    if not taken:
        return []
    # One object per site, shared by its events (a join would build one per event).
    sites = TrackingSite.objects.using(using)
    if whole:
        claimed = list(_claimed(events, values["token"]))
        by_pk = sites.in_bulk({event.site_id for event in claimed})
        for event in claimed:
            event.site = by_pk[event.site_id]
            event.__dict__.update(claim_values)
        return claimed
    # Only what sending needs; the values just written are set here, not read back.
    if not returned:  # the database can't return rows from an UPDATE: read them
        returned = list(_claimed(events, values["token"]).values_list(*_SENDING_FIELDS))
    by_pk = sites.in_bulk({values[1] for values in returned})
    return [_partial_event(values, by_pk, claim_values, using) for values in returned]


# Expired leases (a crashed worker's events) first, then pending events.
_QUEUES = ("expired", "due")


@dataclass(frozen=True)
class _Marking:
    """The UPDATE that marks up to ``n`` events of one queue as this claim's.

    A claim runs it with its own time, token and lease; the rest of the statement is always
    the same, so the sweep's is compiled once and run again (building and compiling the
    queryset cost more than running it).
    """

    using: str
    queue: str
    n: int
    locking: bool
    ids: list[int] | None  # only these events (after commit, "retry now")

    def queryset(self, values: dict[str, Any]) -> QuerySet[ConversionEvent]:
        now = values["now"]
        events = ConversionEvent.objects.using(self.using)
        due = events.filter(_sendable_sites(now))
        if self.ids is not None:
            due = due.filter(pk__in=self.ids)
        if self.queue == "expired":
            due = due.filter(status=EventStatus.SENDING, lease_expires_at__lt=now)
            due = due.order_by("lease_expires_at", "pk")
        else:
            due = due.filter(status=EventStatus.PENDING, next_attempt_at__lte=now)
            due = due.order_by("next_attempt_at", "pk")
        due = due.values("pk")[: self.n]
        if self.locking:
            due = due.select_for_update(skip_locked=True, of=("self",))
        return events.filter(pk__in=due)

    def returning(self, values: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        """Mark the events and return what sending needs; None if the database can't."""
        template = None if self.ids is not None else self._template()
        if template is not None:
            sql, params = template.sql, template.params_for(values, connections[self.using])
        else:
            statement = self._sql(values)
            if statement is None:
                return None
            sql, params = statement
        return bulk.run_returning(ConversionEvent, self.using, sql, params, _SENDING_FIELDS)

    def _sql(self, values: dict[str, Any]) -> tuple[str, list[Any]] | None:
        return bulk.update_returning_sql(
            self.queryset(values), _claim_values(values), _SENDING_FIELDS
        )

    def _template(self) -> bulk.Template | None:
        key = (self.using, self.queue, self.n, self.locking, settings.USE_TZ)
        if key not in _templates:
            if len(_templates) > 64:  # odd sizes after a partial first queue: keep it small
                _templates.clear()
            fields = ConversionEvent._meta
            _templates[key] = bulk.template(
                self._sql,
                {
                    "now": fields.get_field("next_attempt_at"),
                    "token": fields.get_field("claim_token"),
                    "lease": fields.get_field("lease_expires_at"),
                },
                self.using,
            )
        return _templates[key]


_templates: dict[tuple[Any, ...], bulk.Template | None] = {}


def _claim_values(values: dict[str, Any]) -> dict[str, Any]:
    """What a claim writes on the events it takes."""
    return {
        "status": EventStatus.SENDING,
        "claim_token": values["token"],
        "lease_expires_at": values["lease"],
    }


def _claimed(events: QuerySet[ConversionEvent], token: uuid.UUID) -> QuerySet[ConversionEvent]:
    # Found by the token among the few events in flight (the status index), which is cheaper
    # than naming the claimed ids again.
    return events.filter(status=EventStatus.SENDING, claim_token=token).order_by(
        "next_attempt_at", "pk"
    )


# What delivering an event reads from its row; the other fields load on access, as with
# ``only()``.
_SENDING_FIELDS = ("pk", "site_id", "event_id", "snapshot", "created_at", "attempts")
_SENDING_ATTNAMES = ("id", *_SENDING_FIELDS[1:])


def _partial_event(
    values: Sequence[Any], sites: dict[int, TrackingSite], claimed: dict[str, Any], using: str
) -> ConversionEvent:
    """A claimed ConversionEvent holding only ``_SENDING_FIELDS`` and the ``claimed`` values,
    with its site, made as ``bulk.bare_instance`` makes instances (see ``_whole_rows_wanted``).
    """
    event = bulk.bare_instance(
        ConversionEvent, dict(zip(_SENDING_ATTNAMES, values, strict=True)), db=using
    )
    event.__dict__.update(claimed)
    event._state.fields_cache = {"site": sites[values[1]]}
    return event


def _whole_rows_wanted() -> bool:
    """Whole rows, built the usual way, when someone gets the events or watches instances
    being made: a receiver of event_delivered / event_failed never loads fields one by one."""
    return (
        event_delivered.has_listeners(ConversionEvent)
        or event_failed.has_listeners(ConversionEvent)
        or bulk.init_watched(ConversionEvent)
    )


# --- running ---------------------------------------------------------------------------------


def deliver_due(max_events: int | None = None) -> DeliveryReport:
    """Deliver everything due now (optionally at most ``max_events``) and return the counts."""
    report = DeliveryReport()
    batch = conversions_settings.CLAIM_BATCH_SIZE
    while max_events is None or report.handled < max_events:
        limit = batch if max_events is None else min(batch, max_events - report.handled)
        events = claim(limit)
        if events:
            report.add(deliver_claimed(events))
        if len(events) < limit:  # that was everything due (or not held by other workers)
            break
    return report


def deliver_events(event_ids: Sequence[int]) -> DeliveryReport:
    """Deliver these events now if they are due (used after commit and by "retry now")."""
    report = DeliveryReport()
    ids = list(event_ids)
    batch = conversions_settings.CLAIM_BATCH_SIZE
    for start in range(0, len(ids), batch):
        events = claim(batch, ids[start : start + batch])
        if events:
            report.add(deliver_claimed(events))
    return report


def deliver_claimed(events: Sequence[ConversionEvent]) -> DeliveryReport:
    report = DeliveryReport()
    by_site: dict[int, list[ConversionEvent]] = defaultdict(list)
    for event in events:
        by_site[event.site_id].append(event)
    for site_events in by_site.values():
        try:
            report.add(SiteDelivery(site_events[0].site, site_events).run())
        except Exception:
            # A bug must not leave events stuck in "sending": hand them back for later.
            logger.exception("Delivery to site %s crashed", site_events[0].site_id)
            _release(site_events, "delivery error; will retry")
            report.deferred += len(site_events)
    return report


# One request's events: each claimed event with what is sent for it.
_Chunk = Sequence[tuple[ConversionEvent, OutboundEvent]]


class SiteDelivery:
    """Sends one site's claimed events and records what happened to each.

    Results are written in groups (``FLUSH_EVENTS`` events or ``FLUSH_SECONDS``, whichever
    comes first; a claim of up to ``CLAIM_BATCH_SIZE`` events is mostly one group): one
    transaction per group instead of one per request keeps a worker close to the speed of the
    wire, and a crash resends at most about half a second of work (events are resent with the
    same event_id once their lease expires, which the providers count once).
    """

    FLUSH_EVENTS = 500
    FLUSH_SECONDS = 0.5
    #: Largest share of the provider's per-minute budget one worker takes at a time.
    MAX_RESERVATION = 50

    def __init__(self, site: TrackingSite, events: Sequence[ConversionEvent]) -> None:
        self.site = site
        self.events = list(events)
        self.provider: Provider = site.provider_instance()
        self.report = DeliveryReport()
        self._dirty: list[ConversionEvent] = []
        # DeliveryAttempt rows to write, per request result (kept so its id stays its own):
        # the rows' values and their events' pks.
        self._attempts: dict[int, tuple[Result, dict[str, Any], list[int]]] = {}
        self._signals: list[tuple[Any, dict[str, Any]]] = []  # sent after the flush commits
        # Looked up once, not per event: most projects receive neither.
        self._heard = {
            s for s in (event_delivered, event_failed) if s.has_listeners(ConversionEvent)
        }
        self._key: ApiKey | None = None  # the key the requests are sent with
        self._budget = 0  # requests reserved from the site's per-minute budget, not yet sent
        self._flushed_at = time.monotonic()
        self._now = timezone.now()

    def run(self) -> DeliveryReport:
        blocked = self.site.endpoint_problem() or self.provider.site_problem()
        key = None if blocked else self.site.current_key()
        if not blocked and key is None:
            blocked = "the site has no active API key; add one to resume"
        elif key is not None and not key.is_readable:
            blocked = f"API key {key.label or key.pk!s} can't be decrypted: {key.key}"
        if blocked:
            self._pause(blocked)
            return self.report
        assert key is not None and isinstance(key.key, str)
        self._key = key
        try:
            self._send_all(key.key)
        finally:
            self._flush()
        return self.report

    def _send_all(self, api_key: str) -> None:
        """Send the claimed events, keeping up to ``DELIVERY_CONCURRENCY`` requests in flight.

        Each request's conversions are rebuilt and encoded just before it goes, and each answer
        is applied as it comes, so this thread works while the others wait on the wire. The
        first request goes alone (a refused key or a 429 then costs one request) unless the
        site took a request with this key here moments ago.
        """
        size = max(1, conversions_settings.BATCH_SIZE) if self.provider.supports_batch else 1
        waiting = deque(self.events[i : i + size] for i in range(0, len(self.events), size))
        concurrency = max(1, conversions_settings.DELIVERY_CONCURRENCY)
        width = concurrency if self._recently_accepted() else 1
        in_flight: dict[Future[list[Result]], _Chunk] = {}
        held: str | None = None  # why the events not sent yet wait
        while waiting or in_flight:
            while held is None and waiting and len(in_flight) < width:
                chunk = self._outbound(waiting.popleft())
                if not chunk:
                    continue
                if not self._take_request(len(waiting) + 1):
                    waiting.appendleft([event for event, _ in chunk])
                    held = "waiting for the provider's rate limit"
                    break
                in_flight[self._send(api_key, chunk, concurrency)] = chunk
            if not in_flight:
                break
            # Whichever answers first: a slow request doesn't hold back the ones behind it.
            answered, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for answer in [f for f in in_flight if f in answered]:  # in the order sent
                if self._apply_all(in_flight.pop(answer), answer.result()):
                    held = held or self.site.paused_reason or "site held back"
                elif held is None:
                    width = concurrency
            if len(self._dirty) >= self.FLUSH_EVENTS or (
                time.monotonic() - self._flushed_at >= self.FLUSH_SECONDS
            ):
                self._flush()
        if held is not None:
            self._release_rest(waiting, held)

    def _take_request(self, wanted: int) -> bool:
        """One request from the site's per-minute budget; False, with the site held back,
        when it is spent. Reserves up to ``wanted`` at a time."""
        if self._budget == 0:
            self._budget, wait = reserve_requests(
                self.site, self.provider.rate_limit_per_minute, min(wanted, self.MAX_RESERVATION)
            )
            if self._budget == 0:
                self._hold(timezone.now() + timedelta(seconds=wait), "rate budget spent")
                return False
        self._budget -= 1
        return True

    def _send(self, api_key: str, chunk: _Chunk, concurrency: int) -> Future[list[Result]]:
        """Send ``chunk`` as one request: on the worker's HTTP threads when it has several.

        The body is built here, on this thread: the HTTP threads only wait for answers.
        """
        requests = self.provider.prepare(api_key, [outbound for _, outbound in chunk])

        def deliver() -> list[Result]:
            return self.provider.deliver(http.get_session(), api_key, requests)

        if concurrency > 1:
            return _http_threads(concurrency).submit(deliver)
        done: Future[list[Result]] = Future()
        try:
            done.set_result(deliver())
        except Exception as err:
            done.set_exception(err)
        return done

    def _apply_all(self, chunk: _Chunk, results: Sequence[Result]) -> bool:
        """Apply one request's results; True when the site's other events wait."""
        self._now = timezone.now()
        stops = False
        for (event, _), result in zip(chunk, results, strict=True):
            stops = self._apply(event, result) or stops
        if stops:
            _accepted.pop(self._accepted_key(), None)
        else:
            _accepted[self._accepted_key()] = time.monotonic()
        return stops

    def _accepted_key(self) -> tuple[int, int | None]:
        return (self.site.pk, self._key.pk if self._key else None)

    def _recently_accepted(self) -> bool:
        accepted_at = _accepted.get(self._accepted_key())
        return accepted_at is not None and time.monotonic() - accepted_at < ACCEPTED_FOR

    def _outbound(self, events: Sequence[ConversionEvent]) -> _Chunk:
        """The events with their stored conversions; an unreadable one fails here."""
        outbound = []
        for event in events:
            try:
                conversion = Conversion.from_snapshot(event.snapshot)
            except Exception as err:
                self._finish(event, Result(Outcome.FAILED, f"stored conversion unreadable: {err}"))
                continue
            outbound.append((event, OutboundEvent(event.event_id, conversion, event.created_at)))
        return outbound

    def _apply(self, event: ConversionEvent, result: Result) -> bool:
        """Decide what ``result`` means for ``event``; True when the site's other events wait."""
        if result.exchange is not None:
            # The events of one batch request share its Result object: one set of values.
            attempt = self._attempts.get(id(result))
            if attempt is None:
                values = _attempt_values(result, self._now)
                attempt = self._attempts[id(result)] = (result, values, [])
            attempt[2].append(event.pk)
        now = self._now
        if result.outcome == Outcome.AUTH_FAILED:
            # The key (or site id) is wrong, not the event: pause the site; the event keeps its
            # attempts and is sent once a new key is saved or the site is resumed.
            if not self.site.is_paused:
                self.site.pause(
                    f"{self.provider.name} refused the site's credentials: {result.reason}"
                )
                logger.warning("Paused site %s: credentials refused", self.site.pk)
            self._requeue(event, now, f"waiting: site paused ({result.reason})")
            self.report.deferred += 1
            return True
        if result.outcome == Outcome.RETRY:
            event.attempts += 1
            next_at = now + timedelta(seconds=retry_delay(event.attempts, result.retry_after))
            if gives_up(event, next_at):
                reason = f"gave up after {event.attempts} attempts: {result.reason}"
                self._finish(event, Result(Outcome.FAILED, reason), count_attempt=False)
                return False
            self._requeue(event, next_at, f"attempt {event.attempts} failed: {result.reason}")
            self.report.retrying += 1
            self.report.retry_at.append((event.pk, next_at))
            if result.http_status == 429:
                self._hold(now + timedelta(seconds=result.retry_after or 0), result.reason)
                return True
            return False
        self._finish(event, result)
        return False

    def _finish(
        self, event: ConversionEvent, result: Result, *, count_attempt: bool = True
    ) -> None:
        status = {
            Outcome.DELIVERED: EventStatus.DELIVERED,
            Outcome.FAILED: EventStatus.FAILED,
            Outcome.INELIGIBLE: EventStatus.SKIPPED,
        }[result.outcome]
        if count_attempt and result.exchange is not None:
            event.attempts += 1
        event.status = status
        event.last_error = "" if status == EventStatus.DELIVERED else result.reason[:2000]
        self._dirty.append(event)
        if status == EventStatus.DELIVERED:
            self.report.delivered += 1
            if event_delivered in self._heard:
                self._signals.append((event_delivered, {"event": event}))
        elif status == EventStatus.FAILED:
            self.report.failed += 1
            logger.warning(
                "Event %s to site %s failed: %s",
                event.event_id,
                self.site.pk,
                redact_personal(event.last_error),
            )
            if event_failed in self._heard:
                self._signals.append((event_failed, {"event": event, "reason": event.last_error}))
        else:
            self.report.skipped += 1

    def _requeue(self, event: ConversionEvent, when: datetime, reason: str) -> None:
        event.status = EventStatus.PENDING
        event.next_attempt_at = when
        event.last_error = reason[:2000]
        self._dirty.append(event)

    def _flush(self) -> None:
        """Write the buffered results in one transaction; signals go out after commit."""
        self._flushed_at = time.monotonic()
        if not self._dirty and not self._attempts:
            return
        now = timezone.now()
        # Events that ended the same way share their new values: one UPDATE per group (a
        # batch of 100 delivered events is one statement), far cheaper than bulk_update().
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for event in self._dirty:
            # What differs between results: what _finish / _requeue set.
            requeued_at = event.next_attempt_at if event.status == EventStatus.PENDING else None
            groups[(event.status, event.attempts, event.last_error, requeued_at)].append(event.pk)
            # The rest is the same for every event of a flush: delivered_at too is stamped per
            # flush (at most FLUSH_SECONDS late) so that a group shares one UPDATE.
            event.__dict__.update(_written_values(event.status, now))
        using = router.db_for_write(ConversionEvent)
        with transaction.atomic(using=using):
            bulk.insert_sharing(
                DeliveryAttempt,
                [(values, pks) for _, values, pks in self._attempts.values()],
                "event_id",
                router.db_for_write(DeliveryAttempt),
            )
            for (status, attempts, last_error, requeued_at), pks in groups.items():
                values = _written_values(status, now)
                if requeued_at is not None:  # a finished event keeps its next_attempt_at
                    values["next_attempt_at"] = requeued_at
                values.update(status=status, attempts=attempts, last_error=last_error)
                bulk.update_pks(ConversionEvent, pks, values, using)
            if self._attempts and self._key is not None:
                # Shown in the admin; written with the results, not in a transaction of its own.
                bulk.update_pks(
                    ApiKey, [self._key.pk], {"last_used_at": now}, router.db_for_write(ApiKey)
                )
            for signal, kwargs in self._signals:
                _send_after_commit(signal, **kwargs)
        self._dirty, self._attempts, self._signals = [], {}, []

    def _pause(self, reason: str) -> None:
        self.site.pause(reason)
        logger.warning("Paused site %s: %s", self.site.pk, redact_personal(reason))
        _release(self.events, f"waiting: site paused ({reason})")
        self.report.deferred += len(self.events)

    def _hold(self, until: datetime, reason: str) -> None:
        TrackingSite.objects.filter(pk=self.site.pk).update(held_until=until)
        self.site.held_until = until
        logger.info("Holding site %s until %s: %s", self.site.pk, until.isoformat(), reason)

    def _release_rest(self, chunks: Iterable[Sequence[ConversionEvent]], reason: str) -> None:
        events = [event for chunk in chunks for event in chunk]
        self._flush()
        _release(events, f"waiting: {reason}", not_before=self.site.held_until)
        self.report.deferred += len(events)


def _written_values(status: str, now: datetime) -> dict[str, Any]:
    """What a flush writes on every event with this new status, besides its own result."""
    return {
        "delivered_at": now if status == EventStatus.DELIVERED else None,
        "claim_token": None,  # the lease ends
        "lease_expires_at": None,
        "updated_at": now,
    }


_executors: dict[int, ThreadPoolExecutor] = {}


def _http_threads(size: int) -> ThreadPoolExecutor:
    """A long-lived pool per size, so each thread keeps its pooled keep-alive session."""
    if size not in _executors:
        _executors[size] = ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="conversions-http"
        )
    return _executors[size]


def _release(
    events: Sequence[ConversionEvent], reason: str, not_before: datetime | None = None
) -> None:
    """Give claimed events back unchanged but for the reason shown in the admin."""
    ConversionEvent.objects.filter(
        pk__in=[e.pk for e in events], status=EventStatus.SENDING
    ).update(
        status=EventStatus.PENDING,
        claim_token=None,
        lease_expires_at=None,
        last_error=reason[:2000],
        next_attempt_at=not_before or timezone.now(),
    )


def _attempt_values(result: Result, when: datetime) -> dict[str, Any]:
    """A DeliveryAttempt row's values but its event (see bulk.insert_sharing)."""
    exchange = result.exchange
    assert exchange is not None
    error = exchange.error or ("" if result.outcome == Outcome.DELIVERED else result.reason)
    return {
        "created_at": when,
        "duration_ms": exchange.duration_ms,
        "url": exchange.url,
        "http_status": exchange.status,
        "request_headers": exchange.request_headers,
        "response_headers": exchange.response_headers,
        "response_body": exchange.response_body,
        "error": error[:2000],
        "outcome": result.outcome,
        "batch_size": exchange.batch_size,
    }


def _send_after_commit(signal: Any, **kwargs: Any) -> None:
    def send() -> None:
        signal.send_robust(sender=ConversionEvent, **kwargs)

    transaction.on_commit(send)


# --- rate limit shared by all workers --------------------------------------------------------


def reserve_requests(site: TrackingSite, per_minute: int | None, wanted: int) -> tuple[int, float]:
    """Take up to ``wanted`` requests from the site's per-minute budget.

    Returns ``(granted, seconds_to_wait)``; ``seconds_to_wait`` matters when nothing was
    granted. The budget is a fixed one-minute window kept on the site row and changed with
    compare-and-set UPDATEs, so every worker on every machine shares it. A process takes at
    least ``RESERVE_BLOCK`` requests at a time and keeps what it didn't use for the rest of
    the same minute, so a busy worker touches the row rarely.
    """
    if not per_minute:
        return wanted, 0.0
    window = timezone.now().replace(second=0, microsecond=0)
    with _leftover_lock:
        kept_window, kept = _leftover.get(site.pk, (window, 0))
        kept = kept if kept_window == window else 0
        if kept >= wanted:
            _leftover[site.pk] = (window, kept - wanted)
            return wanted, 0.0
        granted, wait, window = _reserve_from_row(
            site, per_minute, max(wanted - kept, min(RESERVE_BLOCK, per_minute))
        )
        total = kept + granted
        _leftover[site.pk] = (window, max(0, total - wanted))
    if total == 0:
        return 0, wait
    return min(total, wanted), 0.0


RESERVE_BLOCK = 20
# When each (site, API key) last took a request from this process (see ACCEPTED_FOR).
_accepted: dict[tuple[int, int | None], float] = {}
_leftover: dict[int, tuple[datetime, int]] = {}
_leftover_lock = threading.Lock()


def forget_sites() -> None:
    """Drop what this process remembers of the sites: its unused request budgets and which
    sites took a request lately (tests; a site's limit or key changing)."""
    with _leftover_lock:
        _leftover.clear()
    _accepted.clear()


def _reserve_from_row(
    site: TrackingSite, per_minute: int, wanted: int
) -> tuple[int, float, datetime]:
    rows = TrackingSite.objects.filter(pk=site.pk)
    for _ in range(10):
        now = timezone.now()
        window = now.replace(second=0, microsecond=0)
        start, count = rows.values_list("rate_window_start", "rate_window_count").get()
        used = count if start == window else 0
        granted = min(wanted, per_minute - used)
        if granted <= 0:
            return 0, max(0.5, (window + RATE_WINDOW - now).total_seconds()), window
        same = rows.filter(rate_window_start=start, rate_window_count=count)
        if same.update(rate_window_start=window, rate_window_count=used + granted):
            return granted, 0.0, window
    return 0, 1.0, window  # heavy contention: try again shortly


# --- admin and API actions -------------------------------------------------------------------


def retry_now(events: Iterable[ConversionEvent]) -> DeliveryReport:
    """Send these events again now, rebuilding from the order where it still exists."""
    from django_conversions.outbox import rebuild_snapshot

    ids = []
    for event in events:
        if (
            event.status == EventStatus.SENDING
            and event.lease_expires_at
            and event.lease_expires_at > timezone.now()
        ):
            continue  # a worker has it right now
        error = rebuild_snapshot(event)
        if error:
            ConversionEvent.objects.filter(pk=event.pk).update(
                status=EventStatus.FAILED, last_error=error
            )
            continue
        event.status = EventStatus.PENDING
        event.next_attempt_at = timezone.now()
        event.claim_token = None
        event.lease_expires_at = None
        event.save()
        ids.append(event.pk)
    if not ids:
        return DeliveryReport()
    return deliver_events(ids)


def resume_site(site: TrackingSite) -> DeliveryReport:
    """Un-pause a site and send what waited for it."""
    site.resume()
    ConversionEvent.objects.filter(site=site, status=EventStatus.PENDING).update(
        next_attempt_at=timezone.now()
    )
    ids = list(
        ConversionEvent.objects.filter(site=site, status=EventStatus.PENDING).values_list(
            "pk", flat=True
        )
    )
    return deliver_events(ids)
