"""The sender: a claim's events go out as requests, each site on its own.

Each site's events are cut into requests (the provider's batch size), each request's lease
renewed just before it goes (an event no longer held is dropped from it, never sent), and up
to ``DELIVERY_CONCURRENCY`` requests per site are in flight on a pool shared by all sites: a
slow or hanging site fills its own slots, never another's. Answers are decided by the policy
and written by the recorder on this thread as they come back; the HTTP threads only wait on
the wire. Each request takes one unit of the site's per-minute budget shared by all workers
(``reserve_requests``).

The first request to a site goes alone (a refused key or a 429 then costs one request) unless
this process sent to the site with the same key moments ago. ``should_stop`` is asked before
each new request: once it says stop, nothing more is sent, what is in flight is recorded and
the rest is handed back for another worker.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from django_conversions import http
from django_conversions.conf import conversions_settings
from django_conversions.conversion import Conversion
from django_conversions.delivery import policy, recorder
from django_conversions.delivery.attempts import Recorded
from django_conversions.delivery.claims import Lease, SiteClaim, request_seconds
from django_conversions.delivery.ratelimit import reserve_requests
from django_conversions.delivery.recorder import SiteResults
from django_conversions.delivery.report import DeliveryReport
from django_conversions.dispatch import request_answered
from django_conversions.models import ApiKey, ConversionEvent, TrackingSite
from django_conversions.providers.base import OutboundEvent, Outcome, Prepared, Provider, Result
from django_conversions.snapshots import rebuild_snapshot

logger = logging.getLogger("django_conversions.delivery")

#: Seconds after a site took a request during which a worker skips the one-request probe.
ACCEPTED_FOR = 60.0
#: Largest share of a provider's per-minute budget one worker takes at a time.
MAX_RESERVATION = 50
#: Sites whose requests the shared pool runs at once, each with DELIVERY_CONCURRENCY slots.
PARALLEL_SITES = 8

StopCheck = Callable[[], bool]

# When each (site, API key) last took a request from this process (see ACCEPTED_FOR).
_accepted: dict[tuple[int, int], float] = {}


@dataclass
class _Request:
    """One request's events, prepared, and the random draw its retries share."""

    events: list[ConversionEvent]
    prepared: Prepared | None
    rand: float


class SiteRun:
    """Sends one site's claimed events; knows when the site must stop."""

    def __init__(self, lease: Lease, claimed: SiteClaim, rules: policy.Rules) -> None:
        self.lease = lease
        self.site: TrackingSite = claimed.site
        self.rules = rules
        self.waiting: deque[list[ConversionEvent]] = deque()
        self.settled: list[Recorded] = []  # results that needed no request, to write next
        self.in_flight = 0
        self.stopped: tuple[str, datetime | None] | None = None  # (why, not before)
        self.more_due = False
        self.key: ApiKey | None = None
        self.provider: Provider | None = None
        self._api_key = ""
        self._budget = 0
        self._width = 1
        self._concurrency = max(1, conversions_settings.DELIVERY_CONCURRENCY)
        blocked = self._open()
        if blocked:
            self.stop(f"site paused ({blocked})", pause=blocked)
            self.waiting.append(list(claimed.events))
            return
        self.more_due = claimed.more_due
        self._queue(claimed.events)
        if self._recently_accepted():
            self._width = self._concurrency

    def _queue(self, events: Sequence[ConversionEvent]) -> None:
        """Cut events into requests of the provider's batch size, to be sent in turn."""
        assert self.provider is not None
        size = self.provider.site.batch_size if self.provider.supports_batch else 1
        size = max(1, size)
        self.waiting.extend(list(events[i : i + size]) for i in range(0, len(events), size))

    def wants_more(self) -> bool:
        """Everything claimed has gone out and the site had more due than was claimed."""
        return self.stopped is None and self.more_due and not self.waiting

    def take_more(self, ids: Sequence[int] | None) -> None:
        """Claim the site's next due events (see ``Lease.take_more``)."""
        claimed = self.lease.take_more(self.site, ids)
        self.more_due = claimed.more_due
        self._queue(claimed.events)

    def _open(self) -> str | None:
        """Why nothing can be sent to the site as it is configured, or None."""
        try:
            self.provider = self.site.provider_instance()
        except Exception as err:
            return f"its provider can't be loaded: {err}"
        blocked = self.site.endpoint_problem() or self.provider.site_problem()
        if blocked:
            return blocked
        key = self.site.current_key()
        if key is None:
            return "the site has no active API key; add one to resume"
        if not key.is_readable:
            return f"API key {key.label or key.pk!s} can't be decrypted: {key.key}"
        self.key, self._api_key = key, key.key
        return None

    # --- sending ----------------------------------------------------------------------------

    def can_send(self) -> bool:
        return self.stopped is None and bool(self.waiting) and self.in_flight < self._width

    def next_request(self) -> _Request | None:
        """The next request, its events still held and checked; None when none is left to
        send now (held back by the rate budget, or every event dropped or settled)."""
        events = self.waiting.popleft()
        try:
            held = self.lease.still_held([e.pk for e in events], needed=request_seconds())
        except Exception:
            self.waiting.appendleft(events)
            raise
        dropped = [event for event in events if event.pk not in held]
        if dropped:
            logger.warning(
                "Site %s: %d claimed event(s) were taken over by another worker before they "
                "were sent; not sending them",
                self.site.pk,
                len(dropped),
            )
        events = [event for event in events if event.pk in held]
        outbound = self._outbound(events)
        if not outbound:
            return None
        if not self._take_request():
            self.waiting.appendleft([event for event, _ in outbound])
            return None
        sending = [event for event, _ in outbound]
        assert self.provider is not None
        try:
            prepared = self.provider.prepare(self._api_key, [out for _, out in outbound])
        except Exception as err:
            self.settle(sending, policy.unexpected(err), random.random())
            return None
        self.in_flight += 1
        return _Request(sending, prepared, random.random())

    def deliver(self, request: _Request) -> list[Result]:
        """Runs on an HTTP thread: no database here."""
        assert self.provider is not None and request.prepared is not None
        return self.provider.deliver(http.get_session(), self._api_key, request.prepared)

    def answered(self, request: _Request, answer: Future[list[Result]]) -> list[Recorded]:
        """The decisions for one answered request; stops the site when one says so."""
        self.in_flight -= 1
        try:
            results = answer.result()
            if len(results) != len(request.events):
                raise ValueError(f"{len(results)} results for {len(request.events)} events")
        except Exception as err:  # a bug or an answer no parser survives: a failed attempt
            logger.exception("Site %s: sending a request failed unexpectedly", self.site.pk)
            results = [policy.unexpected(err)] * len(request.events)
        decided = self._decide(request.events, results, request.rand)
        if request_answered.has_listeners(TrackingSite):
            self._announce(results)
        stops = [item for item in decided if item.decision.stops_site]
        if stops:
            first = stops[0]
            _accepted.pop(self._accepted_key(), None)
            if first.decision.pause_site is not None:  # the recorder pauses the site
                self.stop(f"site paused ({first.result.reason})")
            else:
                self.stop(first.result.reason, until=first.decision.hold_site_until)
        elif self.stopped is None:
            _accepted[self._accepted_key()] = time.monotonic()
            self._width = self._concurrency
        return decided

    def _announce(self, results: Sequence[Result]) -> None:
        """``request_answered`` for one request (metrics)."""
        accepted = sum(1 for result in results if result.outcome == Outcome.DELIVERED)
        exchange = results[0].exchange if results else None
        request_answered.send_robust(
            sender=TrackingSite,
            site=self.site,
            outcome=Outcome.DELIVERED if accepted else results[0].outcome,
            duration=exchange.duration_ms / 1000 if exchange is not None else None,
            events=len(results),
            accepted=accepted,
        )

    def settle(self, events: Sequence[ConversionEvent], result: Result, rand: float) -> None:
        """Results decided without an answer (nothing was sent), written with the next group."""
        self.settled += self._decide(events, [result] * len(events), rand)

    def take_settled(self) -> list[Recorded]:
        settled, self.settled = self.settled, []
        return settled

    def _decide(
        self, events: Sequence[ConversionEvent], results: Sequence[Result], rand: float
    ) -> list[Recorded]:
        now = timezone.now()
        name = self.provider.name if self.provider is not None else self.site.provider
        return [
            Recorded(
                event,
                result,
                policy.decide(
                    result,
                    attempts=event.attempts,
                    created_at=event.created_at,
                    now=now,
                    provider_name=name,
                    rules=self.rules,
                    rand=lambda: rand,
                ),
            )
            for event, result in zip(events, results, strict=True)
        ]

    def _outbound(
        self, events: list[ConversionEvent]
    ) -> list[tuple[ConversionEvent, OutboundEvent]]:
        """The events with their stored conversions; an unreadable one fails on its own."""
        outbound = []
        for event in events:
            if event.rebuild_before_send and not self._rebuilt(event):
                continue
            try:
                conversion = Conversion.from_snapshot(event.snapshot)
            except Exception as err:
                reason = f"stored conversion unreadable: {err}"
                self.settle([event], Result(Outcome.FAILED, reason), 0.0)
                continue
            outbound.append((event, OutboundEvent(event.event_id, conversion, event.created_at)))
        return outbound

    def _rebuilt(self, event: ConversionEvent) -> bool:
        """Rebuild an event the order's transaction left marked (the process ended before the
        refresh after its commit: ``django_conversions.refresh``) and store it under the
        lease. False when it can't be sent: it failed with the reason, or is no longer ours."""
        error = rebuild_snapshot(event)
        if error:
            self.settle([event], Result(Outcome.FAILED, error), 0.0)
            return False
        event.rebuild_before_send = False
        return bool(
            self.lease.held([event.pk]).update(
                snapshot=event.snapshot,
                order_reference=event.order_reference,
                rebuild_before_send=False,
            )
        )

    # --- stopping ---------------------------------------------------------------------------

    def stop(self, why: str, *, pause: str | None = None, until: datetime | None = None) -> None:
        """Send nothing more to this site; its unsent events wait (see ``release_rest``)."""
        if pause is not None:
            recorder.pause_site(self.site, pause, timezone.now(), self.lease.using)
        if self.stopped is None:
            self.stopped = (why, until)

    def release_rest(self, why: str | None = None) -> int:
        """Hand the unsent events back; returns how many."""
        events = [event for chunk in self.waiting for event in chunk]
        self.waiting.clear()
        if not events:
            return 0
        reason, until = self.stopped or (why or "not sent", None)
        return self.lease.release(events, policy.waiting_reason(reason), until)

    def _take_request(self) -> bool:
        """One request from the site's per-minute budget; when it is spent the site is held
        until the next window and stops."""
        if self._budget == 0:
            assert self.provider is not None
            wanted = min(len(self.waiting) + 1, MAX_RESERVATION)
            self._budget, wait_seconds = reserve_requests(
                self.site, self.provider.rate_limit_per_minute, wanted
            )
            if self._budget == 0:
                until = timezone.now() + timedelta(seconds=wait_seconds)
                recorder.hold_site(self.site, until, self.lease.using)
                self.stop("waiting for the provider's rate limit", until=until)
                return False
        self._budget -= 1
        return True

    def _accepted_key(self) -> tuple[int, int]:
        return (self.site.pk, self.key.pk if self.key else 0)

    def _recently_accepted(self) -> bool:
        accepted_at = _accepted.get(self._accepted_key())
        return accepted_at is not None and time.monotonic() - accepted_at < ACCEPTED_FOR


def send(
    lease: Lease,
    should_stop: StopCheck | None = None,
    *,
    take_more: bool = True,
    ids: Sequence[int] | None = None,
) -> DeliveryReport:
    """Send a claim's events, site by site at once, and record every answer.

    With ``take_more`` a site whose claimed events are all on the wire claims its next due
    events (of ``ids`` only, when given) at once: the slot an answer frees is refilled without
    a claim in between, and each site goes at its own pace, so a slow site never holds back a
    fast one.
    """
    report = DeliveryReport()
    rules = policy.Rules.from_settings()
    runs = [SiteRun(lease, claimed, rules) for claimed in lease.sites]
    pool = _pool()
    in_flight: dict[Future[list[Result]], tuple[SiteRun, _Request]] = {}
    stopping = False

    def claim_next(run: SiteRun) -> None:
        if take_more and not stopping and run.wants_more():
            try:
                run.take_more(ids)
            except Exception:  # the claim failed: what is due stays for the next claim
                logger.exception("Site %s: could not claim its next events", run.site.pk)
                run.more_due = False

    def fill() -> None:
        for run in runs:
            claim_next(run)
            send_next(run)
            # The next round is claimed while this one is on the wire: the slots its answers
            # free are filled at once, without a claim in between.
            claim_next(run)
            send_next(run)

    def send_next(run: SiteRun) -> None:
        nonlocal stopping
        while not stopping and run.can_send():
            if should_stop is not None and should_stop():
                stopping = True
                return
            try:
                request = run.next_request()
            except Exception:
                # The database refused the renewal or the budget: what is not sent stays
                # claimed and returns when the lease runs out.
                logger.exception("Site %s: could not go on sending", run.site.pk)
                run.waiting.clear()
                run.stop("delivery error")
                break
            if request is not None:
                in_flight[pool.submit(run.deliver, request)] = (run, request)

    fill()
    report.add(_write(runs, []))
    while in_flight:
        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
        answered: list[tuple[SiteRun, list[Recorded]]] = []
        for future in [f for f in in_flight if f in done]:  # in the order sent
            run, request = in_flight.pop(future)
            answered.append((run, run.answered(request, future)))
        report.add(_write(runs, answered))
        fill()
        report.add(_write(runs, []))
    why = "the worker stopped before sending it" if stopping else None
    for run in runs:
        report.deferred += run.release_rest(why)
    return report


def _write(
    runs: Sequence[SiteRun], answered: list[tuple[SiteRun, list[Recorded]]]
) -> DeliveryReport:
    """Write answered requests and settled results in one transaction."""
    items: dict[int, list[Recorded]] = {}
    for run, decided in answered:
        items.setdefault(id(run), []).extend(decided)
    groups = []
    for run in runs:
        mine = items.get(id(run), []) + run.take_settled()
        if mine:
            groups.append(SiteResults(run.lease, run.site, run.key, mine))
    return recorder.write(groups)


_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """The process's HTTP threads, kept so each keeps its pooled keep-alive session."""
    size = max(1, conversions_settings.DELIVERY_CONCURRENCY) * PARALLEL_SITES
    with _pool_lock:
        if size not in _pools:
            _pools[size] = ThreadPoolExecutor(
                max_workers=size, thread_name_prefix="conversions-http"
            )
        return _pools[size]


def forget_accepted() -> None:
    _accepted.clear()
